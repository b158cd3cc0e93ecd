"""The detectors pool RoIs with ``FastRoIAlign``: torchvision's RoIAlign (mmcv's
``use_torchvision``), on CPU its forward and backward compiled by numba. On CPU each gives the
numbers of the one it replaced bitwise, outputs and gradients, at a fraction of the time."""

import pytest
import torch
from mmcv.ops import RoIAlign

from downstream.detection.models import detector_config
from downstream.detection.roi_align import FastRoIAlign, roi_align_backward, roi_align_forward


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
def test_detectors_pool_with_fast_roi_align(head, masks):
    roi = detector_config("resnet18", 16, 3, head=head, masks=masks)["roi_head"]
    extractors = [k for k in ("bbox_roi_extractor", "mask_roi_extractor") if roi.get(k)]
    assert len(extractors) == (2 if masks and head == "fpn" else 1)
    for key in extractors:
        assert roi[key]["roi_layer"]["type"] == "FastRoIAlign"


def _edge_rois(images: int, size: int) -> torch.Tensor:
    """RoIs the random ones rarely give: off the map, on its far edges, degenerate, tiny, whole."""
    boxes = [
        [-40, -40, -20, -20],  # outside: no gradient
        [-3, -3, 6, 6],  # across the top-left border (clamped samples)
        [size - 5, size - 5, size + 3, size + 3],  # across the bottom-right border
        [10, 10, 10, 10],  # empty
        [20, 30, 18, 25],  # inverted
        [5.3, 7.1, 5.9, 7.4],  # under one feature pixel
        [0, 0, size, size],  # the whole image
        [0.5, 1.25, size - 0.75, size / 2],
    ]
    return torch.tensor([[i % images, *box] for i, box in enumerate(boxes)], dtype=torch.float32)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output", [(7, 7), (14, 14), (3, 5)])
def test_numba_backward_equals_torchvision_bitwise(aligned, sampling_ratio, output):
    g = torch.Generator().manual_seed(3)
    shape = (3, 24, 32, 40)  # not square, so height and width cannot be swapped unnoticed
    rois = torch.cat([_rois(300, 3, 128, seed=4), _edge_rois(3, 128)])
    grad = torch.randn(len(rois), shape[1], *output, generator=g)
    args = (0.25, *output, *shape, sampling_ratio, aligned)
    expected = torch.ops.torchvision._roi_align_backward(grad, rois, *args)
    got = roi_align_backward(grad, rois, 0.25, shape, sampling_ratio, aligned)
    assert expected.abs().sum() > 0
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.equal(got, expected)
    # a strided gradient (as autograd may hand over) gives the same
    strided = grad.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(roi_align_backward(strided, rois, 0.25, shape, sampling_ratio, aligned), got)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output", [(7, 7), (14, 14), (3, 5)])
def test_numba_forward_equals_torchvision_bitwise(aligned, sampling_ratio, output):
    features = torch.randn(3, 24, 32, 40, generator=torch.Generator().manual_seed(8))
    features[:, :, 0, 0] = float("inf")  # off-map samples add 0 x this pixel, as torchvision does
    rois = torch.cat([_rois(300, 3, 128, seed=9), _edge_rois(3, 128)])
    expected = torch.ops.torchvision.roi_align(
        features, rois, 0.25, *output, sampling_ratio, aligned
    )
    got = roi_align_forward(features, rois, output, 0.25, sampling_ratio, aligned)
    assert expected.nan_to_num().abs().sum() > 0 and expected.isnan().any()
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())
    assert torch.equal(got.isnan(), expected.isnan())


def test_numba_backward_without_rois_is_zero():
    got = roi_align_backward(
        torch.zeros(0, 8, 7, 7), torch.zeros(0, 5), 0.25, (2, 8, 6, 6), 0, True
    )
    assert got.shape == (2, 8, 6, 6) and not got.any()


@pytest.mark.parametrize("output", [7, 14])
def test_fast_roi_align_layer_equals_torchvision_layer(output):
    features = torch.randn(4, 16, 32, 32, generator=torch.Generator().manual_seed(5))
    rois = _rois(500, 4, 128, seed=6)
    results = []
    for layer in (
        RoIAlign(output, 0.25, sampling_ratio=0, aligned=True, use_torchvision=True),
        FastRoIAlign(output, 0.25, sampling_ratio=0, aligned=True),
    ):
        x = features.clone().requires_grad_(True)
        y = layer(x, rois)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(7)))
        with torch.no_grad():  # inference: the forward alone
            y_eval = layer(x, rois)
        results.append((y.detach(), x.grad, y_eval))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_bad_shapes_are_errors_before_the_kernels():
    # the compiled kernels do not check bounds: what would take them outside must stop before
    features, grad = torch.zeros(2, 4, 8, 8), torch.zeros(1, 4, 7, 7)
    rois = torch.tensor([[2.0, 0, 0, 16, 16]])
    with pytest.raises(ValueError, match="outside the batch of 2 images"):
        roi_align_forward(features, rois, (7, 7), 0.25, 0, True)
    with pytest.raises(ValueError, match="outside the batch of 2 images"):
        roi_align_backward(grad, rois, 0.25, (2, 4, 8, 8), 0, True)
    with pytest.raises(ValueError, match=r"rois must be \[R, 5\]"):
        roi_align_forward(features, rois[:, :4], (7, 7), 0.25, 0, True)
    with pytest.raises(ValueError, match="a gradient"):
        roi_align_backward(torch.zeros(1, 6, 7, 7), rois * 0, 0.25, (2, 4, 8, 8), 0, True)
    empty = roi_align_forward(torch.zeros(2, 4, 0, 8), rois * 0, (7, 7), 0.25, 0, True)
    assert empty.shape == (1, 4, 7, 7) and not empty.any()
