# Protocol card `embedded-mrcnn`: Mask R-CNN + FPN under the schedule, data and CPU-scale heads of
# `embedded-frcnn` (see there); scored by box and mask AP on the FactorShapes `det` val part.
_base_ = ["./embedded-frcnn.py"]
protocol = "embedded-mrcnn"
masks = True
metrics = ["bbox", "segm"]
