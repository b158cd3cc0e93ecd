"""Augmentations that record their parameters: every view is a pure function of (image, parameter
vector).

Six ops are applied in a fixed order, VICReg's pipeline: ``crop`` (RandomResizedCrop), ``flip``,
``color_jitter`` (p = 0.8), ``grayscale`` (p = 0.2), ``blur`` and ``solarize``. ``sample_params``
draws one view's parameters from a ``torch.Generator`` (never from a global RNG, so a ``(seed,
index)`` pair gives the same view again); ``apply_params`` renders them. The parameter vector is
flat float32 with a fixed layout (``PARAM_SLICES``, ``PARAM_NAMES``)::

    crop          top, left, height, width     the box actually cropped, in fractions of the source
                                               image
    flip          applied                      0/1
    color_jitter  applied, brightness, contrast, saturation, hue, order
                  multiplicative factors actually used (1 = neutral), hue shift in turns (0 =
                  neutral), order = index into ``JITTER_ORDERS`` of the sequence the four sub-ops
                  ran in
    grayscale     applied
    blur          applied, sigma               sigma in pixels of the output view, 0 when not
                                               applied
    solarize      applied                      pixels >= 128 inverted (PIL's ImageOps.solarize)

An op that is not applied, or not listed in ``AugmentConfig.ops``, has neutral parameters
(``neutral``) and leaves the image unchanged; the neutral crop is the whole image (still resized to
``out_size``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable, Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from core.config import ConfigError

OPS: tuple[str, ...] = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")

#: Field names of each op's parameters, in layout order.
OP_FIELDS: dict[str, tuple[str, ...]] = {
    "crop": ("top", "left", "height", "width"),
    "flip": ("applied",),
    "color_jitter": ("applied", "brightness", "contrast", "saturation", "hue", "order"),
    "grayscale": ("applied",),
    "blur": ("applied", "sigma"),
    "solarize": ("applied",),
}


def _layout() -> dict[str, slice]:
    slices, start = {}, 0
    for op in OPS:
        slices[op] = slice(start, start + len(OP_FIELDS[op]))
        start += len(OP_FIELDS[op])
    return slices


PARAM_SLICES: dict[str, slice] = _layout()
PARAM_DIM: int = sum(len(fields) for fields in OP_FIELDS.values())
PARAM_NAMES: tuple[str, ...] = tuple(f"{op}.{field}" for op in OPS for field in OP_FIELDS[op])

#: Colour-jitter sub-ops, numbered as torchvision's ColorJitter numbers them.
JITTER_SUBOPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
#: Every order of the four sub-ops; ``color_jitter.order`` indexes this list.
JITTER_ORDERS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(4)))
_ORDER_INDEX = {perm: i for i, perm in enumerate(JITTER_ORDERS)}

#: Parameters of an op that does nothing.
NEUTRAL: dict[str, tuple[float, ...]] = {
    "crop": (0.0, 0.0, 1.0, 1.0),
    "flip": (0.0,),
    "color_jitter": (0.0, 1.0, 1.0, 1.0, 0.0, 0.0),
    "grayscale": (0.0,),
    "blur": (0.0, 0.0),
    "solarize": (0.0,),
}

#: Solarize threshold on uint8 pixels (pixels >= threshold are inverted, as PIL's
#: ImageOps.solarize).
SOLARIZE_THRESHOLD = 128
#: Interpolation of the resized crop (VICReg uses bicubic).
DEFAULT_INTERPOLATION = "bicubic"
#: Views rendered together at most (in pixels per channel): a 224 px chunk of 20 views keeps its
#: float copies (12 MB each) small enough for the cache and below the allocator's mmap threshold.
RENDER_CHUNK_PIXELS = 2**20
#: How far views rendered on an accelerator may be from the CPU's (uint8 grey levels): the mean
#: absolute difference and its 99.9th percentile; the accelerator resizes crops in float (the CPU in
#: uint8, rounding within its passes) and its float ops round differently (docs/reliability.md). On
#: the CPU both paths give the same pixels.
DEVICE_RENDER_TOLERANCE = {"mean": 0.5, "q999": 8.0}


# ------------------------------------------------------------------------------------------------
# config
@dataclasses.dataclass
class AugmentConfig:
    """Which ops may be applied and how strongly (defaults: VICReg's). Per-view fields hold (view 1,
    view 2)."""

    #: Ops that may be applied; an op not listed is never applied (neutral parameters), e.g. for
    #: ablations.
    ops: list[str] = dataclasses.field(default_factory=lambda: list(OPS))
    #: RandomResizedCrop: range of the crop's area as a fraction of the image, and of its aspect
    #: ratio w/h.
    crop_scale: tuple[float, ...] = (0.08, 1.0)
    crop_ratio: tuple[float, ...] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    #: Colour jitter: probability, then factor ranges [1-x, 1+x] (hue: shift in [-x, x] turns).
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    #: Gaussian blur probability per view, and the range of sigma (pixels of the output view).
    blur_p: tuple[float, ...] = (1.0, 0.1)
    blur_sigma: tuple[float, ...] = (0.1, 2.0)
    #: Solarize probability per view.
    solarize_p: tuple[float, ...] = (0.0, 0.2)

    def __post_init__(self) -> None:
        validate(self)


def _fail(message: str) -> None:
    raise ConfigError(f"augment config: {message}")


def _check_prob(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= float(value) <= 1.0
    ):
        _fail(f"{name} = {value!r} must be a probability in [0, 1]")


def _check_pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        _fail(f"{name} = {value!r} must be a pair of numbers (two values)")
    if any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        for v in value
    ):
        _fail(f"{name} = {value!r} must hold two finite numbers")
    return float(value[0]), float(value[1])


def validate(cfg: AugmentConfig) -> None:
    """Raise ``ConfigError`` (a ValueError) naming the first bad field of ``cfg``."""
    if isinstance(cfg.ops, str) or not isinstance(cfg.ops, Sequence):
        _fail(f"ops = {cfg.ops!r} must be a list of op names from {list(OPS)}")
    unknown = [op for op in cfg.ops if op not in OPS]
    if unknown:
        _fail(f"unknown op(s) {unknown} in ops; valid ops: {', '.join(OPS)}")
    duplicates = sorted({op for op in cfg.ops if list(cfg.ops).count(op) > 1})
    if duplicates:
        _fail(f"op(s) {duplicates} listed more than once in ops")
    lo, hi = _check_pair("crop_scale", cfg.crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        _fail(f"crop_scale = {cfg.crop_scale!r} must satisfy 0 < min <= max <= 1")
    lo, hi = _check_pair("crop_ratio", cfg.crop_ratio)
    if not 0.0 < lo <= hi:
        _fail(f"crop_ratio = {cfg.crop_ratio!r} must satisfy 0 < min <= max")
    for name in ("flip_p", "jitter_p", "grayscale_p"):
        _check_prob(name, getattr(cfg, name))
    for name in ("brightness", "contrast", "saturation"):
        value = getattr(cfg, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= float(value) < math.inf
        ):
            _fail(
                f"{name} = {value!r} must be a number >= 0 (factors are drawn from [max(0, 1-x), "
                "1+x])"
            )
    if (
        isinstance(cfg.hue, bool)
        or not isinstance(cfg.hue, (int, float))
        or not 0.0 <= float(cfg.hue) <= 0.5
    ):
        _fail(f"hue = {cfg.hue!r} must be in [0, 0.5] (a shift in turns)")
    for name in ("blur_p", "solarize_p"):
        for view, p in enumerate(_check_pair(name, getattr(cfg, name))):
            _check_prob(f"{name}[{view}]", p)
    lo, hi = _check_pair("blur_sigma", cfg.blur_sigma)
    if not 0.0 < lo <= hi:
        _fail(f"blur_sigma = {cfg.blur_sigma!r} must satisfy 0 < min <= max")


# ----------------------------------------------------------------------------------------------
# sampling
def _uniform(generator: torch.Generator, n: int) -> list[float]:
    """``n`` draws from U[0, 1) using only ``generator``."""
    return torch.rand(n, generator=generator, dtype=torch.float64).tolist()


def _check_view(view: int, height: int, width: int) -> None:
    if view not in (0, 1) or isinstance(view, bool):
        raise ValueError(f"view must be 0 or 1 (selects the per-view probabilities), got {view!r}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")


def sample_crop_box(
    generator: torch.Generator,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box in pixels ``(top, left, h, w)``: 10 tries, then a centre-crop
    fallback.

    Each try draws an area fraction ~ U(scale) and a log-uniform aspect ratio w/h ~ exp(U(log
    ratio)); the first box that fits is placed uniformly. If none fits, the whole image is taken,
    narrowed to the nearest allowed aspect ratio when the image's own is outside ``ratio``, and
    centred.
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u_area, u_ratio, u_top, u_left = _uniform(generator, 4)
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u_top * (height - h + 1)), height - h)
            left = min(int(u_left * (width - w + 1)), width - w)
            return top, left, h, w
    own = width / height
    if own < ratio[0]:
        w, h = width, min(height, max(1, int(round(width / ratio[0]))))
    elif own > ratio[1]:
        h, w = height, min(width, max(1, int(round(height * ratio[1]))))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def sample_op(
    cfg: AugmentConfig, generator: torch.Generator, op: str, view: int, height: int, width: int
) -> torch.Tensor:
    """One op's parameters (its ``PARAM_SLICES[op]`` part) for a view of a ``height`` x ``width``
    image."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    _check_view(view, height, width)
    return torch.tensor(_op_values(cfg, generator, op, view, height, width), dtype=torch.float32)


def _op_values(
    cfg: AugmentConfig, generator: torch.Generator, op: str, view: int, height: int, width: int
) -> Sequence[float]:
    """``sample_op``'s values as floats (arguments already checked)."""
    if op not in cfg.ops:
        values: Sequence[float] = NEUTRAL[op]
    elif op == "crop":
        top, left, h, w = sample_crop_box(generator, height, width, cfg.crop_scale, cfg.crop_ratio)
        values = (top / height, left / width, h / height, w / width)
    elif op == "flip":
        values = (float(_uniform(generator, 1)[0] < cfg.flip_p),)
    elif op == "color_jitter":
        u_apply, u_b, u_c, u_s, u_h = _uniform(generator, 5)
        order = tuple(torch.randperm(4, generator=generator).tolist())
        if u_apply < cfg.jitter_p:

            def factor(strength: float, u: float) -> float:
                lo = max(0.0, 1.0 - strength)
                return lo + (1.0 + strength - lo) * u

            values = (
                1.0,
                factor(cfg.brightness, u_b),
                factor(cfg.contrast, u_c),
                factor(cfg.saturation, u_s),
                cfg.hue * (2.0 * u_h - 1.0),
                float(_ORDER_INDEX[order]),
            )
        else:
            values = NEUTRAL["color_jitter"]
    elif op == "grayscale":
        values = (float(_uniform(generator, 1)[0] < cfg.grayscale_p),)
    elif op == "blur":
        u_apply, u_sigma = _uniform(generator, 2)
        if u_apply < cfg.blur_p[view]:
            values = (1.0, cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u_sigma)
        else:
            values = NEUTRAL["blur"]
    else:  # solarize
        values = (float(_uniform(generator, 1)[0] < cfg.solarize_p[view]),)
    return values


def sample_params(
    cfg: AugmentConfig, generator: torch.Generator, view: int, height: int, width: int
) -> torch.Tensor:
    """A view's full parameter vector ``[PARAM_DIM]`` (float32): every op's part, in ``OPS``
    order."""
    _check_view(view, height, width)
    # One tensor per view, not one per op: sampling runs for every view of every batch.
    return torch.tensor(
        [v for op in OPS for v in _op_values(cfg, generator, op, view, height, width)],
        dtype=torch.float32,
    )


def neutral_params() -> torch.Tensor:
    """The parameters of the identity view (whole image, nothing else applied)."""
    return torch.tensor([v for op in OPS for v in NEUTRAL[op]], dtype=torch.float32)


# -----------------------------------------------------------------------------------------------
# applying
def blur_kernel_size(sigma: float, height: int, width: int) -> int:
    """Odd kernel size 2*ceil(3*sigma)+1, clamped to the largest odd size that fits the image."""
    size = 2 * math.ceil(3.0 * sigma) + 1
    limit = min(height, width)
    limit -= 1 - limit % 2  # largest odd number <= the smaller side
    return max(1, min(size, limit))


def _check_batch(
    images: Sequence[torch.Tensor] | torch.Tensor, params: torch.Tensor, out_size: int
) -> torch.Tensor:
    if not isinstance(params, torch.Tensor) or params.ndim != 2 or params.shape[1] != PARAM_DIM:
        shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must be a tensor of shape [N, {PARAM_DIM}], got {shape}")
    if len(images) != params.shape[0]:
        raise ValueError(
            f"{len(images)} images but {params.shape[0]} parameter rows: give one row per image"
        )
    for image in images:
        if (
            not isinstance(image, torch.Tensor)
            or image.dtype != torch.uint8
            or image.ndim != 3
            or image.shape[0] != 3
        ):
            what = (
                f"{image.dtype} {tuple(image.shape)}"
                if isinstance(image, torch.Tensor)
                else type(image).__name__
            )
            raise ValueError(f"image must be a uint8 tensor [3, H, W], got {what}")
    if isinstance(out_size, bool) or int(out_size) < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    # float32 first, so that float64 or list round trips of a recorded vector give the same pixels.
    p = params.detach().to("cpu", torch.float32)
    jitter = p[:, PARAM_SLICES["color_jitter"]]
    on = jitter[:, 0] >= 0.5
    order = jitter[:, 5].round()
    if bool((on & ((order < 0) | (order >= len(JITTER_ORDERS)))).any()):
        raise ValueError(
            f"color_jitter.order must be an index in 0..{len(JITTER_ORDERS) - 1}, "
            f"got {jitter[on, 5].tolist()}"
        )
    if bool((on & (jitter[:, 4].abs() > 0.5)).any()):
        raise ValueError(
            f"color_jitter.hue must be a shift in [-0.5, 0.5] turns, got {jitter[on, 4].tolist()}"
        )
    return p


def _crop_box(crop: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """A recorded box (fractions of the image) in whole pixels: (top, left, height, width)."""
    top, left, h, w = crop
    ch = min(max(int(round(h * height)), 1), height)
    cw = min(max(int(round(w * width)), 1), width)
    ct = min(max(int(round(top * height)), 0), height - ch)
    cl = min(max(int(round(left * width)), 0), width - cw)
    return ct, cl, ch, cw


def _crops(
    images: Sequence[torch.Tensor] | torch.Tensor,
    p: torch.Tensor,
    out_size: int,
    interpolation: str,
    batched: bool | None = None,
) -> torch.Tensor:
    """Each image's recorded box, resized to ``out_size`` (antialiased, on uint8): [N, 3, S, S]
    uint8. On the CPU one image at a time; on an accelerator in batched products
    (``_crops_batched``), since a call per image costs more to launch there than to run."""
    boxes = [
        _crop_box(crop, *image.shape[-2:])
        for image, crop in zip(images, p[:, PARAM_SLICES["crop"]].double().tolist())
    ]
    if batched is None:
        batched = len(images) > 0 and images[0].device.type != "cpu"
    if batched and interpolation in _AA_HALF_SUPPORT:
        return _crops_batched(images, boxes, out_size, interpolation)
    mode = InterpolationMode(interpolation)  # torchvision < 0.27 takes no plain strings here
    return torch.stack(
        [
            F.resized_crop(image, *box, [out_size, out_size], interpolation=mode, antialias=True)
            for image, box in zip(images, boxes)
        ]
    )


#: Half the support, at scale 1, of the filters torch's antialiased interpolate resamples with.
_AA_HALF_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}
#: Source pixels (per channel) converted to float at once by ``_crops_batched``: 0.4 GB, and about
#: as much again for the products' operands and results.
BATCHED_CROP_PIXELS = 2**25


def _aa_filter(x: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Torch's antialiasing filters: the triangle, or the cubic of a = -0.5 (PIL's)."""
    x = x.abs()
    if interpolation == "bilinear":
        return (1.0 - x).clamp_(min=0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, size: int, out_size: int, interpolation: str
) -> torch.Tensor:
    """[n, out_size, size]: the weights by which output pixel i of image k takes the source pixels
    ``start[k] .. start[k] + length[k] - 1`` along one axis of ``size`` pixels, computed as torch's
    antialiased interpolate computes them (zero outside the box, each row summing to 1)."""
    device = start.device
    scale = length / out_size
    stretch = scale.clamp(min=1.0)  # a downscale widens the filter by its factor
    support = (_AA_HALF_SUPPORT[interpolation] * stretch)[:, None]
    center = scale[:, None] * (torch.arange(out_size, device=device) + 0.5)  # [n, S]
    first = (center - support + 0.5).floor().clamp_(min=0.0)
    end = torch.minimum((center + support + 0.5).floor(), length[:, None])
    at = torch.arange(size, device=device)[None, None] - start[:, None, None]  # in the box
    weights = _aa_filter((at - center[..., None] + 0.5) / stretch[:, None, None], interpolation)
    weights = weights * ((at >= first[..., None]) & (at < end[..., None]))
    return weights / weights.sum(-1, keepdim=True)


def _crops_batched(
    images: Sequence[torch.Tensor] | torch.Tensor,
    boxes: list[tuple[int, int, int, int]],
    out_size: int,
    interpolation: str,
) -> torch.Tensor:
    """``_crops`` as two batched matrix products per group of images of one size: a view is
    (rows' weights) @ image @ (columns' weights)^T, the separable antialiased resize of its box. The
    views equal torchvision's within float rounding (tested on the CPU)."""
    device = images[0].device
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    views = torch.empty((len(boxes), 3, out_size, out_size), dtype=torch.uint8, device=device)
    # float32 products whatever autocast the caller runs in: bf16 would move pixels by a level
    with torch.autocast(device.type, enabled=False):
        for (height, width), members in groups.items():
            step = max(1, BATCHED_CROP_PIXELS // (height * width))
            for i in range(0, len(members), step):
                chunk = members[i : i + step]
                x = torch.stack([images[k] for k in chunk]).float()
                box = torch.tensor([boxes[k] for k in chunk], dtype=torch.float32)
                box = box.to(device, non_blocking=True)
                rows = _resize_weights(box[:, 0], box[:, 2], height, out_size, interpolation)
                cols = _resize_weights(box[:, 1], box[:, 3], width, out_size, interpolation)
                y = rows[:, None] @ x @ cols[:, None].transpose(-1, -2)
                at = torch.tensor(chunk).to(device, non_blocking=True)
                views[at] = y.clamp_(0.0, 255.0).round_().to(torch.uint8)
    return views


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float images [n, 3, H, W] -> [n, 1, H, W] (torchvision's weights)."""
    r, g, b = x.unbind(-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` in [0, 1]; ``factor`` [n] is one value per image."""
    f = factor.view(-1, 1, 1, 1)
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of float images [n, 3, H, W] by ``shift`` [n] turns (value and saturation
    kept)."""
    value, _ = x.max(-3)
    low, _ = x.min(-3)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(-3)
    # Hue in sixths of a turn, from whichever channel is largest (red first on ties, as PIL).
    hue = torch.where(
        value == r,
        (g - b) / safe,
        torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = torch.remainder(hue / 6.0 + shift.view(-1, 1, 1), 1.0)
    # Back to RGB: each channel n in (5, 3, 1) is value - chroma * clamp(min(k, 4 - k), 0, 1), k =
    # (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + hue * 6.0, 6.0)
        channels.append(value - chroma * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=-3).clamp_(0.0, 1.0)


def _jitter_subop(x: torch.Tensor, sub: int, factor: torch.Tensor) -> torch.Tensor:
    # the parameters stay on the CPU, the pixels may not: copied without waiting on the device
    factor = factor.to(x.device, non_blocking=True)
    if sub == 0:  # brightness: blend with black
        return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if sub == 1:  # contrast: blend with the mean luma of each image
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), factor)
    if sub == 2:  # saturation: blend with the image's own luma
        return _blend(x, _gray(x), factor)
    return _shift_hue(x, factor)


def _color_jitter(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per image: brightness, contrast, saturation and hue in the recorded order, neutral factors
    skipped."""
    jitter = p[:, PARAM_SLICES["color_jitter"]]
    on = jitter[:, 0] >= 0.5
    if not bool(on.any()):
        return x
    factors = jitter[:, 1:5]
    neutral = torch.tensor(NEUTRAL["color_jitter"][1:5])
    orders = torch.tensor(JITTER_ORDERS)[
        jitter[:, 5].round().long().clamp(0, len(JITTER_ORDERS) - 1)
    ]
    for position in range(4):
        for sub in range(4):
            rows = (
                (on & (orders[:, position] == sub) & (factors[:, sub] != neutral[sub]))
                .nonzero()
                .flatten()
            )
            if len(rows):
                at = rows.to(x.device, non_blocking=True)
                x[at] = _jitter_subop(x[at], sub, factors[rows, sub])
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [n, 3, S, S] with one sigma and kernel radius per image, reflect
    padding.

    Images are blurred in groups of equal radius, so an image's result depends on its own parameters
    alone, not on which other images share the batch (a wider kernel padded with zero taps would
    round differently). Works in place; images of radius 0 are left as they are."""
    for reach in radius.unique().tolist():
        if reach > 0:
            rows = (radius == reach).nonzero().flatten()
            at = rows.to(x.device, non_blocking=True)
            x[at] = _separable_blur(x[at], sigma[rows], int(reach))
    return x


def _separable_blur(x: torch.Tensor, sigma: torch.Tensor, reach: int) -> torch.Tensor:
    """Blur [n, C, H, W] by a (2 reach + 1)-tap Gaussian per image: two depthwise convolutions (one
    kernel per channel), about twice as fast on the CPU as accumulating shifted copies."""
    taps = torch.arange(-reach, reach + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    total = torch.zeros_like(sigma)
    for column in kernel.unbind(1):  # summed tap by tap: the same rounding whatever the batch
        total = total + column
    n, channels, height, width = x.shape
    # the taps are computed on the CPU whatever the device, so both render the same kernel
    kernel = (kernel / total[:, None]).repeat_interleave(channels, 0)  # [n * C, taps]
    kernel = kernel.to(x.device, non_blocking=True)
    y = x.reshape(1, n * channels, height, width)
    y = torch.nn.functional.pad(y, (reach, reach, 0, 0), mode="reflect")
    y = torch.nn.functional.conv2d(y, kernel.view(n * channels, 1, 1, -1), groups=n * channels)
    y = torch.nn.functional.pad(y, (0, 0, reach, reach), mode="reflect")
    y = torch.nn.functional.conv2d(y, kernel.view(n * channels, 1, -1, 1), groups=n * channels)
    return y.view(n, channels, height, width)


def _blur(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    applied, sigma = p[:, PARAM_SLICES["blur"]].unbind(-1)
    size = x.shape[-1]
    kernel = torch.tensor(
        [blur_kernel_size(s, size, size) if s > 0 else 1 for s in sigma.double().tolist()]
    )
    # radius 0 for views without blur: _gaussian_blur picks each radius group from the batch itself
    return _gaussian_blur(x, sigma, torch.where((applied >= 0.5) & (sigma > 0), kernel // 2, 0))


def render_views(
    images: Sequence[torch.Tensor] | torch.Tensor,
    params: torch.Tensor,
    out_size: int,
    interpolation: str = DEFAULT_INTERPOLATION,
    batched_crops: bool | None = None,
) -> torch.Tensor:
    """Render a batch of views: ``images[i]`` uint8 [3, H, W] (sizes may differ) and ``params``
    [N, P] -> uint8 [N, 3, out_size, out_size].

    Crops are resized (antialiased) per image on the CPU and in batched matrix products on an
    accelerator (``batched_crops``: None picks by device; True on the CPU shows what an accelerator
    renders); flip, colour jitter, grayscale and blur then run on the whole batch in float with
    per-image parameters, and one rounding back to uint8 precedes solarize. Every step treats an
    image on its own, so on the CPU a view's pixels are the same whatever batch renders it (on an
    accelerator, to the rounding of its batched products). Large batches are rendered in chunks of
    about ``RENDER_CHUNK_PIXELS`` pixels, whose float copies stay in cache. The images may sit on
    any device (an accelerator under ``views.render: device``): the views are rendered there, from
    parameters read on the CPU.
    """
    p = _check_batch(images, params, out_size)
    on_cpu = len(images) == 0 or images[0].device.type == "cpu"
    # an accelerator renders the batch at once: chunks only pay on the CPU, for its cache
    chunk = max(1, RENDER_CHUNK_PIXELS // (out_size * out_size)) if on_cpu else len(p)
    if len(p) <= chunk:
        return _render(images, p, out_size, interpolation, batched_crops)
    return torch.cat(
        [
            _render(images[i : i + chunk], p[i : i + chunk], out_size, interpolation, batched_crops)
            for i in range(0, len(p), chunk)
        ]
    )


def _render(
    images: Sequence[torch.Tensor] | torch.Tensor,
    p: torch.Tensor,
    out_size: int,
    interpolation: str,
    batched_crops: bool | None = None,
) -> torch.Tensor:
    s = PARAM_SLICES
    views = _crops(images, p, out_size, interpolation, batched_crops)

    def rows(op: str) -> torch.Tensor:  # the images op is applied to, as indices on their device
        return (p[:, s[op]][:, 0] >= 0.5).nonzero().flatten().to(views.device, non_blocking=True)

    flip = rows("flip")
    views[flip] = views[flip].flip(-1)
    x = views.float().div_(255.0)
    x = _color_jitter(x, p)
    gray = rows("grayscale")
    x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)
    x = _blur(x, p)
    views = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    solar = rows("solarize")
    views[solar] = torch.where(views[solar] >= SOLARIZE_THRESHOLD, 255 - views[solar], views[solar])
    return views


def apply_params(
    image: torch.Tensor,
    params: torch.Tensor,
    out_size: int,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> torch.Tensor:
    """Render one view: uint8 ``[3, H, W]`` -> uint8 ``[3, out_size, out_size]``, determined by
    ``params`` alone."""
    if not isinstance(params, torch.Tensor) or params.shape != (PARAM_DIM,):
        shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"params must be a tensor of shape [{PARAM_DIM}], got {shape}")
    return render_views([image], params[None], out_size, interpolation)[0]


# ------------------------------------------------------------------------------------------------
# helpers
def _check_ops(ops: Iterable[str]) -> list[str]:
    if isinstance(ops, str):
        ops = [ops]
    ops = list(ops)
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; valid ops: {', '.join(OPS)}")
    return ops


def with_ops_from(base: torch.Tensor, other: torch.Tensor, ops: Iterable[str]) -> torch.Tensor:
    """A copy of ``base`` whose parts for ``ops`` come from ``other`` (also for batches ``[...,
    PARAM_DIM]``)."""
    ops = _check_ops(ops)
    if base.shape != other.shape or base.shape[-1:] != (PARAM_DIM,):
        raise ValueError(
            f"base and other must have the same shape [..., {PARAM_DIM}], "
            f"got {tuple(base.shape)} and {tuple(other.shape)}"
        )
    return torch.where(_columns_of(tuple(ops)), other.to(base.dtype), base)


@functools.cache
def _columns_of(ops: tuple[str, ...]) -> torch.Tensor:
    """[PARAM_DIM] bool: the parameter columns of ``ops`` (cached: views of every batch ask for
    them)."""
    mask = torch.zeros(PARAM_DIM, dtype=torch.bool)
    for op in ops:
        mask[PARAM_SLICES[op]] = True
    return mask


def describe(params: torch.Tensor) -> dict[str, float]:
    """``{"crop.top": ..., ...}``: the parameter vector by name, for logs."""
    if not isinstance(params, torch.Tensor) or params.shape != (PARAM_DIM,):
        raise ValueError(
            f"params must be a tensor of shape [{PARAM_DIM}], got "
            f"{getattr(params, 'shape', params)!r}"
        )
    return dict(zip(PARAM_NAMES, params.detach().to("cpu", torch.float32).double().tolist()))


class Augment:
    """The pipeline's common case: a fixed config and output size; ``sample`` then ``__call__``
    (replayable)."""

    def __init__(
        self, cfg: AugmentConfig, out_size: int, interpolation: str = DEFAULT_INTERPOLATION
    ):
        validate(cfg)
        if isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 1:
            raise ValueError(f"out_size must be a positive integer, got {out_size!r}")
        self.cfg = cfg
        self.out_size = out_size
        self.interpolation = interpolation

    def sample(
        self, generator: torch.Generator, view: int, height: int, width: int
    ) -> torch.Tensor:
        return sample_params(self.cfg, generator, view, height, width)

    def __call__(self, image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return apply_params(image, params, self.out_size, self.interpolation)

    def render(
        self,
        images: Sequence[torch.Tensor],
        params: torch.Tensor,
        batched_crops: bool | None = None,
    ) -> torch.Tensor:
        """Many views at once: ``images[i]`` with ``params[i]`` -> uint8 [N, 3, S, S] (same pixels
        as ``__call__``; ``batched_crops`` as in ``render_views``)."""
        return render_views(images, params, self.out_size, self.interpolation, batched_crops)

    def __repr__(self) -> str:
        return (
            f"Augment(out_size={self.out_size}, ops={list(self.cfg.ops)}, "
            f"interpolation={self.interpolation!r})"
        )
