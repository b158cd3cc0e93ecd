"""Deterministic resizing for evaluation and feature extraction (uint8 tensors in, uint8 tensors
out)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


def resize_center_crop(size: int, resize_ratio: float = 1.0) -> v2.Transform:
    """Resize the shorter side to ``size * resize_ratio`` (e.g. 256/224 for ImageNet), then
    centre-crop ``size``."""
    return v2.Compose([v2.Resize(round(size * resize_ratio), antialias=True), v2.CenterCrop(size)])


def to_float(
    images: torch.Tensor,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    std: tuple[float, ...] = (0.229, 0.224, 0.225),
) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> normalised float32, the input every backbone of the suite
    expects."""
    return F.normalize(images.float().div_(255), mean=list(mean), std=list(std))
