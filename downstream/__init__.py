"""Transfer stages: classification (linear, kNN, fine-tune) and MMDetection
detection/segmentation."""
