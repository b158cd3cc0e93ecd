"""The detectors pool RoIs with torchvision's RoIAlign (through mmcv's ``use_torchvision``): on CPU
it gives mmcv's numbers bitwise, outputs and gradients, at a fraction of the time."""

import pytest
import torch
from mmcv.ops import RoIAlign

from downstream.detection.models import detector_config


def _rois(count: int, images: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, images, (count, 1), generator=g).float()
    corner = torch.rand(count, 2, generator=g) * (size - 8)
    extent = torch.rand(count, 2, generator=g) * (size - 4) + 2
    return torch.cat([index, corner, (corner + extent).clamp(max=size)], 1)


@pytest.mark.parametrize("output", [7, 14])
def test_torchvision_roi_align_equals_mmcv_bitwise(output):
    # the embedded cards' finest FPN level: 128-px images at stride 4, adaptive sampling
    features = torch.randn(4, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    rois = _rois(200, 4, 128, seed=1)
    results = []
    for torchvision in (False, True):
        layer = RoIAlign(output, 0.25, sampling_ratio=0, aligned=True, use_torchvision=torchvision)
        x = features.clone().requires_grad_(True)
        y = layer(x, rois.clone())
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
        y.backward(grad)
        results.append((y.detach(), x.grad))
    (y_mmcv, g_mmcv), (y_tv, g_tv) = results
    assert y_mmcv.abs().sum() > 0 and g_mmcv.abs().sum() > 0
    assert torch.equal(y_mmcv, y_tv) and torch.equal(g_mmcv, g_tv)


@pytest.mark.parametrize(("head", "masks"), [("fpn", False), ("fpn", True), ("c4", True)])
def test_detectors_pool_with_torchvision(head, masks):
    roi = detector_config("resnet18", 16, 3, head=head, masks=masks)["roi_head"]
    extractors = [k for k in ("bbox_roi_extractor", "mask_roi_extractor") if roi.get(k)]
    assert len(extractors) == (2 if masks and head == "fpn" else 1)
    for key in extractors:
        assert roi[key]["roi_layer"]["type"] == "RoIAlign"
        assert roi[key]["roi_layer"]["use_torchvision"] is True
