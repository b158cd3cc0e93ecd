# Protocol card `voc0712-frcnn-c4-24k`: MoCo's VOC transfer protocol in MMDetection 3.x. Faster
# R-CNN with a C4 head (ResNet stage 4 as the RoI head), trained on VOC2007+2012 trainval, tested on
# VOC2007 test. Settings of MoCo's detectron2 config (docs/detection-notes.md): 24k iterations at
# total batch 16, lr 0.02, linear warm-up over 100 iterations, steps at 18k and 22k, SyncBN in
# backbone and head (plain BN on one process), nothing frozen, multi-scale training (short side
# 480-800, step 32), test at 800, horizontal flip. Score: COCO-style AP over IoU 0.50:0.95 with
# VOC2007's 11-point AP, plus AP50 and AP75 (VOCMetric). Not reproduced: detectron2's extra BN after
# res5 and precise BN at test (mmdet has neither built in). With fewer than 8 GPUs keep batch_size
# 16 if memory allows (it is the total over processes); otherwise halve batch_size and lr and double
# max_iters and milestones (docs/protocols.md), via --set.
protocol = "voc0712-frcnn-c4-24k"
head = "c4"
masks = False
norm = "SyncBN"
frozen_stages = -1
norm_eval = False
data = dict(
    type="voc",
    name="voc07+12",
    root="data/VOCdevkit",
    train=["VOC2007/ImageSets/Main/trainval.txt", "VOC2012/ImageSets/Main/trainval.txt"],
    val=["VOC2007/ImageSets/Main/test.txt"],
)
max_iters = 24000
warmup_iters = 100
milestones = [18000, 22000]
batch_size = 16
lr = 0.02
momentum = 0.9
weight_decay = 1e-4
image_scale = (1333, 800)
train_scales = [(1333, short) for short in range(480, 801, 32)]
train_augment = [dict(type="RandomFlip", prob=0.5)]
metrics = ["voc"]
num_workers = 4
