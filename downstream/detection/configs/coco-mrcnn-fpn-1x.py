# Protocol card `coco-mrcnn-fpn-1x`: Mask R-CNN + FPN on COCO 2017 train, scored on val2017 (box and
# mask AP), the self-supervised transfer setting of mmselfsup/MoCo: SyncBN trained in backbone and
# heads (plain BN on one process), nothing frozen, 1x schedule = 90k iterations at total batch 16
# (12 epochs), lr 0.02, linear warm-up over 500 iterations from 0.001 x, steps at 60k and 80k,
# single scale 1333x800, horizontal flip. With fewer than 8 GPUs: see voc0712-frcnn-c4-24k.py.
protocol = "coco-mrcnn-fpn-1x"
head = "fpn"
masks = True
norm = "SyncBN"
frozen_stages = -1
norm_eval = False
data = dict(
    type="coco",
    name="coco2017",
    root="data/coco",
    train=dict(img="train2017", ann="annotations/instances_train2017.json"),
    val=dict(img="val2017", ann="annotations/instances_val2017.json"),
)
max_iters = 90000
warmup_iters = 500
milestones = [60000, 80000]
batch_size = 16
lr = 0.02
momentum = 0.9
weight_decay = 1e-4
image_scale = (1333, 800)
train_augment = [dict(type="RandomFlip", prob=0.5)]
metrics = ["bbox", "segm"]
num_workers = 4
