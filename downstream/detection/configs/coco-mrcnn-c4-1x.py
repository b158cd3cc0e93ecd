# Protocol card `coco-mrcnn-c4-1x`: Mask R-CNN with a C4 head (ResNet stage 4 shared by box and mask
# heads) on COCO 2017, the 1x schedule and BN of `coco-mrcnn-fpn-1x` (see there).
_base_ = ["./coco-mrcnn-fpn-1x.py"]
protocol = "coco-mrcnn-c4-1x"
head = "c4"
