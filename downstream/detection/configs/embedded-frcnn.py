# Protocol card `embedded-frcnn`: Faster R-CNN + FPN on the FactorShapes `det` split (128 px, 2,000
# train / 500 val images, 1-6 objects each), 300 iterations on CPU, the backbone's weights frozen
# (lr x 0) while its BN statistics are re-estimated on the detection images (BN in train mode): at
# this budget a fine-tuned backbone mostly re-learns (fine-tuning everything: MAST 5.7 vs random
# init 5.4 box AP; backbone at 0.1 x lr: 7.7 vs 8.2), so the card measures what the pretrained
# features give the heads, as a linear probe does for classification. `--set backbone_lr_mult=1.0`
# fine-tunes everything as the GPU cards do. Categories: `shape` by default; `color`, `orient` (and
# `chiral` on det-upright) are the other COCO files. Flips and photometric distortion are off: a
# flip turns a chiral shape into its mirror, colour distortion changes the `color` category, and the
# shape classes include chiral ones. Read by downstream.detection (mmengine Config.fromfile); keys
# are overridable with --set.
protocol = "embedded-frcnn"
head = "fpn"
masks = False
norm = "BN"  # "SyncBN" under torchrun with several GPUs; on CPU it is plain BN
# no stage frozen by mmdet (that would also freeze BN statistics); weights stay through
frozen_stages = -1
norm_eval = False  # backbone_lr_mult = 0, BN statistics adapt to the detection data
backbone_lr_mult = 0.0
data = dict(type="factorshapes", split="det", categories="shape", image_size=128)
max_iters = 300
warmup_iters = 50
milestones = [225, 275]
batch_size = 8
lr = 0.02  # heads only; 0.01 was slower to converge in 300 iterations
momentum = 0.9
weight_decay = 1e-4
image_scale = (128, 128)
train_augment = []  # no flip, no photometric distortion (see above)
# CPU-scale heads (models.shrink_fpn_heads): mmdet's 256-channel FPN, 1024-wide box head and 1,000
# test proposals per image make one evaluation of the 500 val images take many minutes on 2 cores.
heads = dict(
    neck_channels=64,
    fc_channels=256,
    rpn_train_proposals=300,
    rpn_test_proposals=100,
    roi_samples=128,
)
metrics = ["bbox"]
