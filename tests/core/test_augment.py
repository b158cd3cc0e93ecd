"""Augmentations with recorded parameters: layout, replay, each op's effect, sampled statistics,
config."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from core import augment as A
from core.augment import (
    OPS,
    PARAM_DIM,
    PARAM_NAMES,
    PARAM_SLICES,
    Augment,
    AugmentConfig,
    apply_params,
    describe,
    neutral_params,
    sample_op,
    sample_params,
    with_ops_from,
)
from core.config import ConfigError, from_dict, to_dict


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A textured colour image: smooth gradients plus noise, so every op changes some pixels."""
    g = _gen(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, 1 - (yy + xx) / 2]) * 200
    noise = torch.rand(3, h, w, generator=g) * 55
    return (base + noise).clamp(0, 255).to(torch.uint8)


def _params(**parts: tuple[float, ...]) -> torch.Tensor:
    """Neutral parameters with some ops' parts set by hand."""
    p = neutral_params()
    for op, values in parts.items():
        p[PARAM_SLICES[op]] = torch.tensor(values, dtype=torch.float32)
    return p


# -------------------------------------------------------------------------------------------------
# layout
def test_layout_is_fixed_contiguous_and_in_ops_order():
    assert OPS == ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")
    assert PARAM_DIM == 15 and len(PARAM_NAMES) == 15
    assert list(PARAM_SLICES) == list(OPS)
    start = 0
    for op in OPS:
        sl = PARAM_SLICES[op]
        assert sl.start == start and sl.step is None
        assert all(name.startswith(op + ".") for name in PARAM_NAMES[sl])
        start = sl.stop
    assert start == PARAM_DIM
    assert [sl.stop - sl.start for sl in PARAM_SLICES.values()] == [4, 1, 6, 1, 2, 1]
    assert PARAM_NAMES[:4] == ("crop.top", "crop.left", "crop.height", "crop.width")
    assert PARAM_NAMES[PARAM_SLICES["color_jitter"]][-1] == "color_jitter.order"
    assert PARAM_NAMES[PARAM_SLICES["blur"]] == ("blur.applied", "blur.sigma")
    assert len(A.JITTER_ORDERS) == 24 and A.JITTER_ORDERS[0] == (0, 1, 2, 3)


def test_describe_names_every_value():
    p = sample_params(AugmentConfig(), _gen(3), 0, 64, 64)
    d = describe(p)
    assert list(d) == list(PARAM_NAMES)
    assert all(isinstance(v, float) for v in d.values())
    assert [d[n] for n in PARAM_NAMES] == pytest.approx(p.tolist())
    with pytest.raises(ValueError, match="shape"):
        describe(torch.zeros(14))


def test_sample_params_is_the_concatenation_of_sample_op():
    cfg = AugmentConfig()
    for view in (0, 1):
        full = sample_params(cfg, _gen(11), view, 48, 80)
        g = _gen(11)
        parts = [sample_op(cfg, g, op, view, 48, 80) for op in OPS]
        assert torch.equal(full, torch.cat(parts))
        assert full.dtype == torch.float32 and full.shape == (PARAM_DIM,)
        for op, part in zip(OPS, parts):
            assert part.shape == (PARAM_SLICES[op].stop - PARAM_SLICES[op].start,)


# -----------------------------------------------------------------------------------------
# determinism
def test_same_seed_same_params_different_seeds_differ():
    cfg = AugmentConfig()
    a = [sample_params(cfg, _gen(7), 1, 64, 64) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    g1, g2 = _gen(7), _gen(7)
    for _ in range(5):  # a stream of views from one generator is reproducible too
        assert torch.equal(sample_params(cfg, g1, 0, 64, 64), sample_params(cfg, g2, 0, 64, 64))
    others = {tuple(sample_params(cfg, _gen(s), 1, 64, 64).tolist()) for s in range(20)}
    assert len(others) == 20


def test_sampling_ignores_the_global_rng():
    cfg = AugmentConfig()
    torch.manual_seed(0)
    a = sample_params(cfg, _gen(5), 0, 64, 64)
    torch.manual_seed(12345)
    torch.rand(10)
    b = sample_params(cfg, _gen(5), 0, 64, 64)
    assert torch.equal(a, b)


@pytest.mark.parametrize("size,out_size", [((64, 64), 64), ((96, 128), 56)])
def test_replay_reproduces_the_view_pixel_for_pixel(size, out_size):
    aug = Augment(AugmentConfig(), out_size)
    image = _image(*size)
    g = _gen(0)
    for i in range(12):
        params = aug.sample(g, i % 2, *size)
        view = aug(image, params)
        assert view.dtype == torch.uint8 and view.shape == (3, out_size, out_size)
        assert torch.equal(view, aug(image, params))
        # through plain floats (as a log or record keeps them)
        replayed = torch.tensor(params.tolist())
        assert torch.equal(view, apply_params(image, replayed, out_size))
        assert torch.equal(view, apply_params(image, params.double(), out_size))


def test_views_from_different_params_differ():
    aug = Augment(AugmentConfig(), 64)
    image = _image()
    views = [aug(image, aug.sample(_gen(s), 0, 64, 64)) for s in range(4)]
    assert all(not torch.equal(views[0], v) for v in views[1:])


# --------------------------------------------------------------------------------------- left-out
# ops
def test_op_not_in_config_is_neutral_and_leaves_image_unchanged():
    cfg = AugmentConfig(
        ops=["crop"],
        flip_p=1.0,
        jitter_p=1.0,
        grayscale_p=1.0,
        blur_p=(1.0, 1.0),
        solarize_p=(1.0, 1.0),
    )
    neutral = neutral_params()
    for seed in range(30):
        p = sample_params(cfg, _gen(seed), seed % 2, 64, 64)
        assert torch.equal(p[PARAM_SLICES["crop"].stop :], neutral[PARAM_SLICES["crop"].stop :])
    # A full-image box and nothing else: the resized image only.
    image = _image(64, 64)
    p = neutral_params()
    assert torch.equal(apply_params(image, p, 64), image)
    assert torch.equal(
        apply_params(image, p, 32),
        F.resize(image, [32, 32], interpolation=F.InterpolationMode.BICUBIC, antialias=True),
    )
    # Without crop in ops the box is the whole image.
    cfg = AugmentConfig(ops=["flip"])
    p = sample_params(cfg, _gen(0), 0, 40, 50)
    assert p[PARAM_SLICES["crop"]].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_ablation_without_color_jitter_samples_every_other_op():
    cfg = AugmentConfig(ops=[op for op in OPS if op != "color_jitter"])
    ps = torch.stack([sample_params(cfg, _gen(s), 1, 64, 64) for s in range(200)])
    assert torch.equal(
        ps[:, PARAM_SLICES["color_jitter"]], torch.tensor(A.NEUTRAL["color_jitter"]).expand(200, -1)
    )
    assert 0 < ps[:, PARAM_SLICES["flip"]].mean() < 1
    assert 0 < ps[:, PARAM_SLICES["grayscale"]].mean() < 1


def test_with_ops_from_copies_only_the_named_slices():
    cfg = AugmentConfig()
    base = sample_params(cfg, _gen(1), 0, 64, 64)
    other = sample_params(cfg, _gen(2), 1, 64, 64)
    mixed = with_ops_from(base, other, ["crop", "blur"])
    for op in OPS:
        source = other if op in ("crop", "blur") else base
        assert torch.equal(mixed[PARAM_SLICES[op]], source[PARAM_SLICES[op]])
    assert torch.equal(base, sample_params(cfg, _gen(1), 0, 64, 64))  # base not modified
    batch = with_ops_from(base.expand(3, -1), other.expand(3, -1), "flip")
    assert torch.equal(batch[:, PARAM_SLICES["flip"]], other[PARAM_SLICES["flip"]].expand(3, -1))
    with pytest.raises(ValueError, match="valid ops"):
        with_ops_from(base, other, ["rotate"])


# -------------------------------------------------------------------------------------- each op's
# effect
def test_flip_mirrors_columns():
    image = _image(64, 64)
    out = apply_params(image, _params(flip=(1.0,)), 64)
    assert torch.equal(out, image.flip(-1))


def test_grayscale_makes_channels_equal():
    image = _image(64, 64)
    out = apply_params(image, _params(grayscale=(1.0,)), 64)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.equal(out, image)


def test_solarize_inverts_pixels_from_128_exactly():
    image = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(3, 1, 1)
    out = apply_params(image, _params(solarize=(1.0,)), 16)
    expected = torch.where(image >= 128, 255 - image, image)
    assert torch.equal(out, expected)
    assert out.view(-1)[127] == 127 and out.view(-1)[128] == 127 and out.view(-1)[255] == 0


def test_crop_box_is_the_recorded_fraction():
    image = _image(64, 64)
    out = apply_params(image, _params(crop=(0.0, 0.0, 0.5, 0.5)), 32)
    assert torch.equal(out, image[:, :32, :32])
    out = apply_params(image, _params(crop=(0.5, 0.25, 0.5, 0.5)), 32)
    assert torch.equal(out, image[:, 32:, 16:48])
    # Non-square source: fractions of height and width separately.
    image = _image(40, 80)
    out = apply_params(image, _params(crop=(0.25, 0.5, 0.5, 0.25)), 20)
    assert torch.equal(out, image[:, 10:30, 40:60])


def test_neutral_jitter_factors_leave_image_unchanged():
    image = _image(64, 64)
    for order in (0.0, 7.0, 23.0):
        out = apply_params(image, _params(color_jitter=(1.0, 1.0, 1.0, 1.0, 0.0, order)), 64)
        assert torch.equal(out, image)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255).round().clamp(0, 255).to(torch.uint8)


def test_jitter_applies_its_factors_in_the_recorded_order():
    """Reference: torchvision's own float ops, one image at a time, rounded to uint8 once at the
    end."""
    image = _image(64, 64)
    b, c, s, h = torch.tensor([1.3, 0.7, 1.2, 0.05]).tolist()  # the float32 values a record holds
    subops = [
        lambda x: F.adjust_brightness(x, b),
        lambda x: F.adjust_contrast(x, c),
        lambda x: F.adjust_saturation(x, s),
        lambda x: F.adjust_hue(x, h),
    ]
    outs = []
    for index in (0, 23):
        expected = image.float() / 255
        for sub in A.JITTER_ORDERS[index]:
            expected = subops[sub](expected)
        out = apply_params(image, _params(color_jitter=(1.0, b, c, s, h, float(index))), 64)
        diff = (out.int() - _quantize(expected).int()).abs()
        # float rounding at .5 boundaries only
        assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
        outs.append(out)
    assert not torch.equal(outs[0], outs[1])
    # Brightness alone scales the pixels.
    out = apply_params(image, _params(color_jitter=(1.0, 0.5, 1.0, 1.0, 0.0, 0.0)), 64)
    assert (out.int() - (image.double() * 0.5).round().int()).abs().max() <= 1
    # applied = 0 ignores whatever factors are recorded.
    out = apply_params(image, _params(color_jitter=(0.0, 0.5, 1.5, 0.0, 0.3, 5.0)), 64)
    assert torch.equal(out, image)


@pytest.mark.parametrize("shift", [-0.5, -0.2, 0.13, 0.5])
def test_hue_shift_matches_torchvision_per_image(shift):
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    x[0, :, :4] = 0.5  # grey pixels: no hue, must stay grey
    expected = torch.stack([F.adjust_hue(image, shift) for image in x])
    assert torch.allclose(A._shift_hue(x.clone(), torch.full((4,), shift)), expected, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.0])
def test_batched_blur_matches_torchvision_per_image(sigma):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    k = A.blur_kernel_size(sigma, 32, 32)
    expected = torch.stack([F.gaussian_blur(image, [k, k], [sigma, sigma]) for image in x])
    out = A._gaussian_blur(x.clone(), torch.full((3,), sigma), torch.full((3,), k // 2))
    assert torch.allclose(out, expected, atol=1e-5)


def test_a_batch_renders_the_same_pixels_as_one_view_at_a_time():
    """Batch independence: other images in the batch (other blur radii, jitter orders) change
    nothing."""
    generator = torch.Generator().manual_seed(11)
    images = [
        torch.randint(0, 256, (3, 40 + 8 * (i % 3), 48), dtype=torch.uint8, generator=generator)
        for i in range(24)
    ]
    params = torch.stack(
        [sample_params(AugmentConfig(), generator, i % 2, *images[i].shape[-2:]) for i in range(24)]
    )
    batch = A.render_views(images, params, 32)
    assert batch.shape == (24, 3, 32, 32) and batch.dtype == torch.uint8
    for i in range(24):
        assert torch.equal(batch[i], apply_params(images[i], params[i], 32))
    assert torch.equal(A.render_views(images[5:9], params[5:9], 32), batch[5:9])


def test_chunked_rendering_gives_the_same_pixels(monkeypatch):
    """Big batches render in chunks (cache-sized float copies); the chunking must not show in the
    pixels."""
    generator = torch.Generator().manual_seed(12)
    images = torch.randint(0, 256, (10, 3, 40, 40), dtype=torch.uint8, generator=generator)
    params = torch.stack(
        [sample_params(AugmentConfig(), generator, i % 2, 40, 40) for i in range(10)]
    )
    whole = A.render_views(images, params, 32)
    # chunks of 3 views, the last one of 1
    monkeypatch.setattr(A, "RENDER_CHUNK_PIXELS", 3 * 32 * 32)
    assert torch.equal(A.render_views(images, params, 32), whole)


def _high_frequency_energy(image: torch.Tensor) -> float:
    x = image.float()
    return float(
        (x[:, 1:, :] - x[:, :-1, :]).pow(2).mean() + (x[:, :, 1:] - x[:, :, :-1]).pow(2).mean()
    )


def test_blur_lowers_high_frequency_energy_of_a_checkerboard():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = (((yy + xx) % 2) * 255).to(torch.uint8).expand(3, -1, -1).contiguous()
    sharp = _high_frequency_energy(board)
    for sigma in (1.0, 2.0):
        out = apply_params(board, _params(blur=(1.0, sigma)), 64)
        assert _high_frequency_energy(out) < 0.05 * sharp
    assert torch.equal(apply_params(board, _params(blur=(0.0, 2.0)), 64), board)  # not applied


def test_blur_kernel_is_odd_and_fits_the_image():
    assert A.blur_kernel_size(0.1, 64, 64) == 3
    assert A.blur_kernel_size(2.0, 64, 64) == 13
    assert A.blur_kernel_size(2.0, 8, 8) == 7
    assert A.blur_kernel_size(2.0, 9, 12) == 9
    image = _image(8, 8)
    out = apply_params(image, _params(blur=(1.0, 2.0)), 8)  # big sigma on a tiny view still works
    assert out.shape == (3, 8, 8)


def test_apply_rejects_bad_inputs():
    p = neutral_params()
    with pytest.raises(ValueError, match="uint8"):
        apply_params(_image().float(), p, 32)
    with pytest.raises(ValueError, match="shape"):
        apply_params(_image(), p[:10], 32)
    with pytest.raises(ValueError, match="order"):
        apply_params(_image(), _params(color_jitter=(1.0, 1.0, 1.0, 1.0, 0.0, 24.0)), 32)
    with pytest.raises(ValueError, match="one row per image"):
        A.render_views([_image(), _image()], neutral_params()[None], 32)


# ------------------------------------------------------------------------------------ sampled
# statistics
def _samples(
    cfg: AugmentConfig, view: int, n: int, height: int = 64, width: int = 64
) -> torch.Tensor:
    g = _gen(1000 + view)
    return torch.stack([sample_params(cfg, g, view, height, width) for _ in range(n)])


def test_sampled_rates_match_the_config():
    cfg, n = AugmentConfig(), 2000
    tol = 4 * math.sqrt(0.25 / n)  # four standard errors of a rate
    views = {view: _samples(cfg, view, n) for view in (0, 1)}
    for view, ps in views.items():

        def rate(op: str, ps=ps) -> float:
            return float(ps[:, PARAM_SLICES[op].start].mean())

        assert rate("flip") == pytest.approx(0.5, abs=tol)
        assert rate("color_jitter") == pytest.approx(0.8, abs=tol)
        assert rate("grayscale") == pytest.approx(0.2, abs=tol)
        assert rate("blur") == pytest.approx(cfg.blur_p[view], abs=tol)
        assert rate("solarize") == pytest.approx(cfg.solarize_p[view], abs=tol)
        # Applied flags are exactly 0 or 1.
        flags = ps[:, [PARAM_SLICES[op].start for op in OPS[1:]]]
        assert set(flags.unique().tolist()) <= {0.0, 1.0}
    assert float(views[0][:, PARAM_SLICES["blur"].start].mean()) == 1.0
    assert float(views[0][:, PARAM_SLICES["solarize"].start].mean()) == 0.0


def test_sampled_values_lie_in_the_configured_ranges():
    cfg, n = AugmentConfig(), 2000
    ps = _samples(cfg, 1, n, 224, 224)
    top, left, h, w = ps[:, PARAM_SLICES["crop"]].T
    area, ratio = h * w, w / h
    assert area.min() >= 0.08 * 0.97 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.98 and ratio.max() <= 4 / 3 * 1.02
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 1 + 1e-6).all() and (left + w <= 1 + 1e-6).all()
    for start, extent in ((top, h), (left, w)):  # boxes are placed uniformly: centred on average
        assert (start > 0).float().mean() > 0.5
        assert float((start + extent / 2).mean()) == pytest.approx(0.5, abs=0.03)
    # most tries succeed on a square image
    assert area.mean() == pytest.approx((0.08 + 1.0) / 2, abs=0.08)
    assert ((top * 224).round() - top * 224).abs().max() < 1e-3  # boxes are whole pixels

    jit = ps[:, PARAM_SLICES["color_jitter"]]
    on, off = jit[jit[:, 0] == 1], jit[jit[:, 0] == 0]
    for col, (lo, hi) in zip((1, 2, 3, 4), ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))):
        assert on[:, col].min() >= lo and on[:, col].max() <= hi
        assert on[:, col].max() - on[:, col].min() > 0.9 * (hi - lo)  # the whole range is used
    assert set(on[:, 5].unique().long().tolist()) == set(range(24))
    assert torch.equal(off, torch.tensor(A.NEUTRAL["color_jitter"]).expand(len(off), -1))

    blur = ps[:, PARAM_SLICES["blur"]]
    sig_on = blur[blur[:, 0] == 1, 1]
    assert (
        sig_on.min() >= 0.1
        and sig_on.max() <= 2.0
        and sig_on.mean() == pytest.approx(1.05, abs=0.15)
    )
    assert (blur[blur[:, 0] == 0, 1] == 0).all()


def test_crop_falls_back_to_a_centre_crop_for_extreme_aspect_ratios():
    # A 10x200 strip: no box with ratio <= 4/3 and area >= 50% fits, so the fallback takes the
    # centre.
    cfg = AugmentConfig(crop_scale=(0.5, 1.0))
    p = sample_op(cfg, _gen(0), "crop", 0, 10, 200)
    top, left, h, w = p.tolist()
    assert (top, h) == (0.0, 1.0)
    assert w * 200 == pytest.approx(13, abs=0.01) and left * 200 == pytest.approx(
        (200 - 13) // 2, abs=0.01
    )


# ------------------------------------------------------------------------------------------------
# config
def test_config_defaults_are_vicregs_and_load_strictly():
    cfg = AugmentConfig()
    assert cfg.ops == list(OPS)
    assert (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p) == (
        0.4,
        0.4,
        0.2,
        0.1,
        0.8,
    )
    assert cfg.blur_p == (1.0, 0.1) and cfg.solarize_p == (0.0, 0.2) and cfg.grayscale_p == 0.2
    loaded = from_dict(AugmentConfig, {"ops": ["crop", "flip"], "blur_p": [0.5, 0.5]})
    assert loaded.ops == ["crop", "flip"] and loaded.blur_p == (0.5, 0.5)
    assert from_dict(AugmentConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"ops": ["crop", "rotate"]},
            "unknown op.*crop, flip, color_jitter, grayscale, blur, solarize",
        ),
        ({"ops": ["crop", "crop"]}, "more than once"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"jitter_p": -0.1}, "jitter_p"),
        ({"grayscale_p": 2.0}, "grayscale_p"),
        ({"blur_p": (1.0, 1.1)}, r"blur_p\[1\]"),
        ({"solarize_p": (0.0,)}, "solarize_p.*pair"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_ratio": (0.75, 1.33, 2.0)}, "crop_ratio"),
        ({"blur_sigma": (0.0, 2.0)}, "blur_sigma"),
        ({"hue": 0.6}, "hue"),
        ({"brightness": -0.1}, "brightness"),
    ],
)
def test_config_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_config_errors_through_from_dict_and_bad_arguments():
    with pytest.raises(ConfigError, match="unknown op"):
        from_dict(AugmentConfig, {"ops": ["colour_jitter"]})
    with pytest.raises(ValueError, match="view"):
        sample_params(AugmentConfig(), _gen(0), 2, 64, 64)
    with pytest.raises(ValueError, match="unknown op"):
        sample_op(AugmentConfig(), _gen(0), "rotate", 0, 64, 64)
    with pytest.raises(ValueError, match="out_size"):
        Augment(AugmentConfig(), 0)


def _random_boxes(gen: torch.Generator, n: int, height: int, width: int) -> list[tuple]:
    boxes = [(0, 0, height, width)]  # the neutral crop: a plain resize
    while len(boxes) < n:
        h = int(torch.randint(1, height + 1, (1,), generator=gen))
        w = int(torch.randint(1, width + 1, (1,), generator=gen))
        top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
        boxes.append((top, left, h, w))
    return boxes


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(64, 64, 64), (300, 200, 64), (40, 50, 96)])
def test_batched_crop_weights_resize_as_torchvision_does(interpolation, size):
    """The accelerator's crops (two matrix products) against torchvision's antialiased resize, in
    float: the same filter, support and normalisation, so equal to float rounding when shrinking,
    enlarging or keeping the size."""
    height, width, out = size
    gen = _gen(0)
    images = torch.randint(0, 256, (12, 3, height, width), generator=gen).float()
    boxes = _random_boxes(gen, len(images), height, width)
    mode = F.InterpolationMode(interpolation)
    expected = torch.stack(
        [
            F.resized_crop(image, *box, [out, out], interpolation=mode, antialias=True)
            for image, box in zip(images, boxes)
        ]
    )
    box = torch.tensor(boxes, dtype=torch.float32)
    rows = A._resize_weights(box[:, 0], box[:, 2], height, out, interpolation)
    cols = A._resize_weights(box[:, 1], box[:, 3], width, out, interpolation)
    assert torch.allclose(rows.sum(-1), torch.ones(len(boxes), out))
    got = rows[:, None] @ images @ cols[:, None].transpose(-1, -2)
    assert (got - expected).abs().max() < 1e-3  # grey levels


def test_batched_crops_keep_each_view_in_place_and_near_the_cpus(monkeypatch):
    """Images of several sizes are grouped by size for the products; every view comes back in its
    own place, rounded to uint8 as torchvision rounds a float resize, and within the accelerator's
    tolerance of the CPU's uint8 path. Chunks of one image give the same views as whole groups."""
    gen = _gen(1)
    sizes = [(48, 40), (30, 60), (48, 40), (64, 64), (30, 60), (48, 40)]
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in sizes]
    boxes = [_random_boxes(gen, 2, h, w)[1] for h, w in sizes]
    got = A._crops_batched(images, boxes, 32, "bicubic")
    assert got.shape == (len(images), 3, 32, 32) and got.dtype == torch.uint8
    mode = F.InterpolationMode.BICUBIC
    for view, image, box in zip(got, images, boxes):
        single = A._crops_batched([image], [box], 32, "bicubic")[0]
        assert torch.equal(view, single)
        float_path = F.resized_crop(
            image.float(), *box, [32, 32], interpolation=mode, antialias=True
        )
        assert (view.float() - float_path.clamp(0, 255).round()).abs().max() <= 1
    cpu = torch.stack(
        [
            F.resized_crop(image, *box, [32, 32], interpolation=mode, antialias=True)
            for image, box in zip(images, boxes)
        ]
    )
    assert (got.float() - cpu.float()).abs().mean() <= A.DEVICE_RENDER_TOLERANCE["mean"]
    monkeypatch.setattr(A, "BATCHED_CROP_PIXELS", 1)  # one image per product
    assert torch.equal(A._crops_batched(images, boxes, 32, "bicubic"), got)


def test_crops_use_torchvision_per_image_on_the_cpu(monkeypatch):
    """On the CPU the per-image path stays (the loader's views, bitwise); the batched one is for
    accelerators only."""
    monkeypatch.setattr(A, "_crops_batched", lambda *a: pytest.fail("batched on the CPU"))
    image = torch.randint(0, 256, (3, 40, 36), generator=_gen(2), dtype=torch.uint8)
    params = neutral_params()
    params[PARAM_SLICES["crop"]] = torch.tensor([0.1, 0.2, 0.6, 0.7])
    expected = F.resized_crop(
        image, 4, 7, 24, 25, [24, 24], interpolation=F.InterpolationMode.BICUBIC, antialias=True
    )
    assert A._crop_box(params[PARAM_SLICES["crop"]].double().tolist(), 40, 36) == (4, 7, 24, 25)
    assert torch.equal(apply_params(image, params, 24), expected)
