"""RoIAlign for the detectors on CPU: torchvision's computation, compiled by numba channels-last.

torchvision's CPU backward recomputes every sample's bilinear weights once per channel; on the
embedded cards that made it about 40% of a training iteration (a 7x7 box RoIAlign over ~1,000 RoIs:
240 ms), and its forward, one channel at a time, most of an evaluation. Here each sample's weights
are computed once and applied to all channels at once, in torchvision's order for every element
(RoI, bin row, bin column, sample row, sample column, corner) and with its float32 arithmetic, so
outputs and gradients are bitwise torchvision's (tests/downstream/test_roi_align.py): the backward
in about a fourteenth of the time, the forward in about a third.
"""

from __future__ import annotations

import math

import mmcv.ops
import numba
import numpy as np
import torch


@numba.njit(cache=True, inline="always")
def _roi_grid(roi, scale, aligned, pooled_h, pooled_w, sampling_ratio):  # pragma: no cover
    # torchvision's per-RoI set-up, float32 throughout and each expression grouped as its C++
    # evaluates it: the corner, the bin size and the samples per bin
    offset = np.float32(0.5) if aligned else np.float32(0.0)
    one = np.float32(1.0)
    start_w = roi[1] * scale - offset
    start_h = roi[2] * scale - offset
    roi_w = (roi[3] * scale - offset) - start_w
    roi_h = (roi[4] * scale - offset) - start_h
    if not aligned:  # malformed RoIs count as 1x1
        if roi_w < one:
            roi_w = one
        if roi_h < one:
            roi_h = one
    f_ph, f_pw = np.float32(pooled_h), np.float32(pooled_w)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / f_ph))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / f_pw))
    return start_h, start_w, roi_h / f_ph, roi_w / f_pw, grid_h, grid_w


@numba.njit(cache=True, inline="always")
def _sample(start, index, size, sub, grid):  # pragma: no cover
    # the coordinate of sample ``sub`` of bin ``index``
    return (start + np.float32(index) * size) + (np.float32(sub + 0.5) * size / np.float32(grid))


@numba.njit(cache=True, inline="always")
def _corners(y, x, height, width):  # pragma: no cover
    # the sample's four pixels and bilinear weights; False off the map (or NaN)
    zero = np.float32(0.0)
    if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
        return False, 0, 0, 0, 0, zero, zero, zero, zero
    y = y if y > 0 else zero
    x = x if x > 0 else zero
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = np.float32(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = np.float32(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - np.float32(y_low), x - np.float32(x_low)
    # C++ `1. - ly` is a double subtraction
    hy, hx = np.float32(1.0 - np.float64(ly)), np.float32(1.0 - np.float64(lx))
    return True, y_low, x_low, y_high, x_high, hy * hx, hy * lx, ly * hx, ly * lx


@numba.njit(cache=True, nogil=True)
def _backward_kernel(grad, rois, scale, sampling_ratio, aligned, out):  # pragma: no cover
    # grad [R, PH, PW, C], rois [R, 5], out [B, H, W, C] (zeros); every element receives its
    # terms in torchvision's order: RoI, bin row, bin column, sample row and column, corner
    n_rois, pooled_h, pooled_w, channels = grad.shape
    height, width = out.shape[1], out.shape[2]
    for n in range(n_rois):
        b = int(rois[n, 0])
        start_h, start_w, bin_h, bin_w, grid_h, grid_w = _roi_grid(
            rois[n], scale, aligned, pooled_h, pooled_w, sampling_ratio
        )
        count = np.float32(grid_h * grid_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                g = grad[n, ph, pw]
                for iy in range(grid_h):
                    y = _sample(start_h, ph, bin_h, iy, grid_h)
                    for ix in range(grid_w):
                        x = _sample(start_w, pw, bin_w, ix, grid_w)
                        inside, y_low, x_low, y_high, x_high, w1, w2, w3, w4 = _corners(
                            y, x, height, width
                        )
                        if not inside:  # no gradient
                            continue
                        target = out[b, y_low, x_low]
                        for c in range(channels):
                            target[c] += g[c] * w1 / count
                        target = out[b, y_low, x_high]
                        for c in range(channels):
                            target[c] += g[c] * w2 / count
                        target = out[b, y_high, x_low]
                        for c in range(channels):
                            target[c] += g[c] * w3 / count
                        target = out[b, y_high, x_high]
                        for c in range(channels):
                            target[c] += g[c] * w4 / count


@numba.njit(cache=True, nogil=True)
def _forward_kernel(image, rois, scale, sampling_ratio, aligned, out):  # pragma: no cover
    # image [B, H, W, C], rois [R, 5], out [R, PH, PW, C]; torchvision's forward per channel
    n_rois, pooled_h, pooled_w, channels = out.shape
    height, width = image.shape[1], image.shape[2]
    total = np.zeros(channels, np.float32)
    for n in range(n_rois):
        b = int(rois[n, 0])
        start_h, start_w, bin_h, bin_w, grid_h, grid_w = _roi_grid(
            rois[n], scale, aligned, pooled_h, pooled_w, sampling_ratio
        )
        count = np.float32(max(grid_h * grid_w, 1))  # an empty grid pools to zero
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                total[:] = np.float32(0.0)
                for iy in range(grid_h):
                    y = _sample(start_h, ph, bin_h, iy, grid_h)
                    for ix in range(grid_w):
                        x = _sample(start_w, pw, bin_w, ix, grid_w)
                        # off the map torchvision still adds 0 x the map's first pixel
                        _, y_low, x_low, y_high, x_high, w1, w2, w3, w4 = _corners(
                            y, x, height, width
                        )
                        v1, v2 = image[b, y_low, x_low], image[b, y_low, x_high]
                        v3, v4 = image[b, y_high, x_low], image[b, y_high, x_high]
                        for c in range(channels):
                            total[c] += ((w1 * v1[c] + w2 * v2[c]) + w3 * v3[c]) + w4 * v4[c]
                target = out[n, ph, pw]
                for c in range(channels):
                    target[c] = total[c] / count


def _check_shapes(rois: torch.Tensor, batch: int) -> None:
    """The kernels index without bounds checks: RoIs are (image, x1, y1, x2, y2) rows, each of an
    image of the batch."""
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"RoIAlign: rois must be [R, 5], got {list(rois.shape)}")
    if len(rois) and not (0 <= rois[:, 0].min() and rois[:, 0].max() < batch):
        raise ValueError(
            f"RoIAlign: RoI image indices span {rois[:, 0].min().item():g} to "
            f"{rois[:, 0].max().item():g}, outside the batch of {batch} images"
        )


def _channels_last_call(kernel, source, rois, spatial_scale, sampling_ratio, aligned, out):
    """``kernel`` over ``source`` [N, C, H, W] laid out channels-last, into ``out`` (channels-last
    zeros), returned channels-first and contiguous; an empty map or batch has nothing to sample."""
    if source.numel() and out.size:
        kernel(
            source.detach().permute(0, 2, 3, 1).contiguous().numpy(),
            rois.detach().contiguous().numpy(),
            np.float32(spatial_scale),  # torchvision's kernels take it as float
            int(sampling_ratio),
            bool(aligned),
            out,
        )
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def roi_align_backward(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    input_shape: tuple[int, int, int, int],
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """The gradient of ``torchvision.ops.roi_align`` for its input (CPU, float32): ``grad`` [R, C,
    PH, PW] of the output, ``rois`` [R, 5]; returns [B, C, H, W] (``input_shape``), contiguous."""
    batch, channels, height, width = input_shape
    _check_shapes(rois, batch)
    if grad.shape[:2] != (len(rois), channels):
        raise ValueError(
            f"RoIAlign: a gradient {list(grad.shape)} for {len(rois)} RoIs of {channels} channels"
        )
    out = np.zeros((batch, height, width, channels), np.float32)
    return _channels_last_call(
        _backward_kernel, grad, rois, spatial_scale, sampling_ratio, aligned, out
    )


def roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` of ``input`` [B, C, H, W] (CPU, float32) at ``rois`` [R, 5]:
    [R, C, *output_size], contiguous."""
    _check_shapes(rois, input.shape[0])
    out = np.zeros((len(rois), *output_size, input.shape[1]), np.float32)
    return _channels_last_call(
        _forward_kernel, input, rois, spatial_scale, sampling_ratio, aligned, out
    )


class _RoIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.setup = (tuple(input.shape), spatial_scale, sampling_ratio, aligned)
        return roi_align_forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        shape, spatial_scale, sampling_ratio, aligned = ctx.setup
        return (
            roi_align_backward(grad, rois, spatial_scale, shape, sampling_ratio, aligned),
            *[None] * 5,
        )


class FastRoIAlign(mmcv.ops.RoIAlign):
    """mmcv's ``RoIAlign``: on float32 CPU inputs ``roi_align_forward`` and ``roi_align_backward``,
    elsewhere torchvision's kernels (``use_torchvision``); all give mmcv's own numbers on CPU."""

    def __init__(self, *args, **kwargs):
        kwargs["use_torchvision"] = True
        super().__init__(*args, **kwargs)

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or not input.dtype == rois.dtype == torch.float32:
            return super().forward(input, rois)
        args = (self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
        if input.requires_grad and torch.is_grad_enabled():
            return _RoIAlignFunction.apply(input, rois, *args)
        return roi_align_forward(input, rois, *args)


# mmdet builds RoI layers by name from mmcv.ops (a class in the config would not survive
# mmengine's config dump), so the layer is made reachable there
mmcv.ops.FastRoIAlign = FastRoIAlign
