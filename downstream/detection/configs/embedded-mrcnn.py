# Protocol card `embedded-mrcnn`: Mask R-CNN + FPN under the schedule, data and CPU-scale heads of
# `embedded-frcnn` (see there); scored by box and mask AP on the FactorShapes `det` val part.
_base_ = ["./embedded-frcnn.py"]
protocol = "embedded-mrcnn"
masks = True
metrics = ["bbox", "segm"]
# A shorter schedule, and two mask-head convolutions instead of mmdet's four: at 300 iterations a
# run took 534 s with four (1.4 s a step) and about 480 s with two (1.3 s a step), so the MAST run
# and its floor did not fit make eval-segmentation's 15 minutes on 2 cores.
max_iters = 250
milestones = [190, 230]
heads = dict(
    neck_channels=64,
    fc_channels=256,
    rpn_train_proposals=300,
    rpn_test_proposals=100,
    roi_samples=128,
    mask_convs=2,
)
