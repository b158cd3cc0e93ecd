"""Views: difference strengths on hand-made parameters, gates, the pair/factorized sampling
policies, pixel replay from recorded parameters, (seed, epoch, index) determinism and the resumable
epoch sampler."""

import pytest
import torch

from core.augment import (
    DEVICE_RENDER_TOLERANCE,
    OPS,
    PARAM_SLICES,
    Augment,
    AugmentConfig,
    neutral_params,
    with_ops_from,
)
from core.data.base import ImageDataset
from core.seeding import sample_generator
from core.views import ViewMaker, ViewsConfig, difference_strength, gates_from, pair_strengths
from pretrain.data import EpochSampler, ViewDataset

H = W = 24  # source image size for sampling
OUT = 16  # rendered view size


def params(**ops):
    """A neutral parameter vector with the given op slices set, e.g. params(crop=(0, 0, .5, .5))."""
    p = neutral_params()
    for op, values in ops.items():
        p[PARAM_SLICES[op]] = torch.tensor(values, dtype=torch.float32)
    return p


def strength(a, b, cfg=None, ops=OPS):
    return difference_strength(a, b, cfg or AugmentConfig(), list(ops))


def differing_ops(a, b, ops=OPS):
    return {op for op in ops if not torch.equal(a[PARAM_SLICES[op]], b[PARAM_SLICES[op]])}


def fresh_pair(cfg, seed):
    """The two full samples ViewMaker.sample draws first in pair mode, and the generator after
    them."""
    aug = Augment(cfg, OUT)
    g = torch.Generator().manual_seed(seed)
    first = aug.sample(g, 0, H, W)
    fresh = aug.sample(g, 1, H, W)
    return first, fresh, g


# ------------------------------------------------------------------------------------ difference
# strengths
def test_identical_views_have_zero_strength_for_every_op():
    a = params(
        crop=(0.1, 0.2, 0.5, 0.6),
        flip=(1.0,),
        color_jitter=(1.0, 1.3, 0.8, 0.9, 0.05, 7.0),
        grayscale=(1.0,),
        blur=(1.0, 1.2),
        solarize=(1.0,),
    )
    for p in (neutral_params(), a):
        d = strength(p, p.clone())
        assert d.shape == (len(OPS),)
        assert torch.equal(d, torch.zeros(len(OPS)))


def test_crop_strength_is_one_minus_iou_computed_by_hand():
    a = params(crop=(0.0, 0.0, 0.5, 0.5))
    b = params(crop=(0.25, 0.25, 0.5, 0.5))
    inter = 0.25 * 0.25
    union = 0.5 * 0.5 + 0.5 * 0.5 - inter
    expected = 1 - inter / union  # IoU = 0.0625 / 0.4375
    d = strength(a, b, ops=["crop"])
    assert d.shape == (1,)
    assert d.item() == pytest.approx(expected, abs=1e-6)
    assert d.item() == pytest.approx(1 - 0.0625 / 0.4375, abs=1e-6)
    # symmetric, disjoint boxes give 1, a box inside another gives 1 - area ratio
    assert strength(b, a, ops=["crop"]).item() == pytest.approx(expected, abs=1e-6)
    assert (
        strength(
            params(crop=(0, 0, 0.4, 0.4)), params(crop=(0.5, 0.5, 0.5, 0.5)), ops=["crop"]
        ).item()
        == 1.0
    )
    inner = strength(neutral_params(), params(crop=(0.25, 0.25, 0.5, 0.5)), ops=["crop"]).item()
    assert inner == pytest.approx(1 - 0.25, abs=1e-6)


def test_identical_sampled_crops_have_exactly_zero_strength_and_gate():
    """Regression: (top + h) - top is not h in float32, so 1 - IoU of two equal boxes came out ~2e-7
    > 0 and the binary gate of an unchanged crop was 1."""
    cfg = AugmentConfig()
    aug = Augment(cfg, OUT)
    g = torch.Generator().manual_seed(0)
    rows = torch.stack([aug.sample(g, 0, 97, 89) for _ in range(300)])
    for dtype in (torch.float32, torch.float64):
        d = difference_strength(rows.to(dtype), rows.clone().to(dtype), cfg, list(OPS))
        assert d.dtype == dtype
        assert torch.equal(d, torch.zeros(300, len(OPS), dtype=dtype))
        assert torch.equal(gates_from(d, "binary"), torch.zeros(300, len(OPS), dtype=dtype))
    # and the views of base=[] / "one" whose crop was not the resampled op get a crop gate of 0
    maker = ViewMaker(cfg, ViewsConfig(base=[], resample="one"), OUT)
    batch = torch.stack(
        [maker.sample(torch.Generator().manual_seed(s), 97, 89) for s in range(120)]
    )
    gates = gates_from(pair_strengths(batch, maker.pairs(), cfg, maker.ops), "binary")
    same_crop = (batch[:, 0, PARAM_SLICES["crop"]] == batch[:, 1, PARAM_SLICES["crop"]]).all(-1)
    assert int(same_crop.sum()) >= 80
    assert torch.equal(gates[:, 0], (~same_crop).float())
    assert bool((gates.sum(1) <= 1).all())  # one op changed at most, so at most one gate is open


@pytest.mark.parametrize("op", ["flip", "grayscale", "solarize"])
def test_binary_ops_applied_versus_not_give_one(op):
    d = strength(neutral_params(), params(**{op: (1.0,)}))
    expected = torch.zeros(len(OPS))
    expected[OPS.index(op)] = 1.0
    assert torch.equal(d, expected)


def test_blur_strength_is_sigma_difference_over_sigma_max():
    cfg = AugmentConfig(blur_sigma=(0.1, 2.0))
    assert strength(
        neutral_params(), params(blur=(1.0, 2.0)), cfg, ["blur"]
    ).item() == pytest.approx(1.0)
    assert strength(
        params(blur=(1.0, 0.5)), params(blur=(1.0, 1.5)), cfg, ["blur"]
    ).item() == pytest.approx(0.5)
    # sigma_max is the config's, not a constant
    cfg4 = AugmentConfig(blur_sigma=(0.1, 4.0))
    assert strength(
        params(blur=(1.0, 0.5)), params(blur=(1.0, 1.5)), cfg4, ["blur"]
    ).item() == pytest.approx(0.25)


def test_colour_jitter_strength_is_mean_normalised_factor_difference():
    jittered = params(color_jitter=(1.0, 1.4, 1.0, 1.0, 0.0, 3.0))
    d = strength(neutral_params(), jittered, ops=["color_jitter"]).item()
    assert d == pytest.approx(0.25 * 0.4 / 0.8, abs=1e-6)  # 0.125
    # every factor at the end of its range against neutral: each term 0.5, mean 0.5
    cfg = AugmentConfig()
    full = params(
        color_jitter=(1.0, 1 + cfg.brightness, 1 - cfg.contrast, 1 + cfg.saturation, -cfg.hue, 0.0)
    )
    assert strength(neutral_params(), full, ops=["color_jitter"]).item() == pytest.approx(
        0.5, abs=1e-6
    )
    # the order index alone is not a difference
    assert (
        strength(
            params(color_jitter=(1.0, 1.1, 1.0, 1.0, 0.0, 0.0)),
            params(color_jitter=(1.0, 1.1, 1.0, 1.0, 0.0, 5.0)),
            ops=["color_jitter"],
        ).item()
        == 0.0
    )


def test_strengths_are_clamped_to_unit_interval():
    a = neutral_params()
    b = params(color_jitter=(1.0, 5.0, 5.0, 5.0, 0.5, 0.0), blur=(1.0, 9.0))
    d = strength(a, b, ops=["color_jitter", "blur"])
    assert torch.equal(d, torch.ones(2))
    batch_a = torch.stack([a, params(blur=(1.0, 0.3))])
    batch_b = torch.stack([b, params(blur=(1.0, 0.3))])
    d = strength(batch_a, batch_b)
    assert d.shape == (2, len(OPS))
    assert float(d.min()) >= 0.0 and float(d.max()) <= 1.0
    assert torch.equal(d[1], torch.zeros(len(OPS)))


def test_pair_strengths_uses_each_ops_pair():
    cfg = AugmentConfig()
    anchor = neutral_params()
    views = torch.stack([anchor, params(flip=(1.0,)), params(grayscale=(1.0,))])  # [V=3, P]
    batch = views.unsqueeze(0).repeat(2, 1, 1)  # [B=2, V, P]
    ops = ["flip", "grayscale"]
    d = pair_strengths(batch, torch.tensor([[0, 1], [0, 2]]), cfg, ops)
    assert torch.equal(d, torch.ones(2, 2))
    # comparing the wrong pairs: flip between views 0 and 2 does not differ, grayscale between 0 and
    # 1 neither
    d = pair_strengths(batch, torch.tensor([[0, 2], [0, 1]]), cfg, ops)
    assert torch.equal(d, torch.zeros(2, 2))


def test_gates_binary_and_strength():
    d = torch.tensor([[0.0, 0.3, 1.0], [1e-6, 0.0, 0.5]])
    binary = gates_from(d, "binary")
    assert torch.equal(binary, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    assert binary.dtype == d.dtype
    assert torch.equal(gates_from(d, "strength"), d)


# -----------------------------------------------------------------------------------------------
# pair mode
def test_pair_one_resamples_crop_and_exactly_one_other_op():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(mode="pair", base=["crop"], resample="one"), OUT)
    others = [op for op in OPS if op != "crop"]
    assert maker.num_views == 2 and maker.others == others
    picked_counts = {op: 0 for op in others}
    differs_counts = {op: 0 for op in others}
    crop_differs = 0
    for seed in range(150):
        p = maker.sample(torch.Generator().manual_seed(seed), H, W)
        assert p.shape == (2, len(neutral_params()))
        first, fresh, g = fresh_pair(cfg, seed)
        picked = others[int(torch.randint(len(others), (1,), generator=g))]
        picked_counts[picked] += 1
        assert torch.equal(p[0], first)
        # crop and the picked op come from the fresh sample, every other slice is view 1's
        assert torch.equal(p[1][PARAM_SLICES["crop"]], fresh[PARAM_SLICES["crop"]])
        assert torch.equal(p[1][PARAM_SLICES[picked]], fresh[PARAM_SLICES[picked]])
        diff = differing_ops(p[0], p[1])
        assert diff <= {"crop", picked}, (seed, diff, picked)
        for op in set(others) - {picked}:
            assert torch.equal(p[0][PARAM_SLICES[op]], p[1][PARAM_SLICES[op]])
        crop_differs += "crop" in diff
        if picked in diff:
            differs_counts[picked] += 1
    assert crop_differs >= 140
    # uniform choice: about 30 each
    assert all(n >= 10 for n in picked_counts.values()), picked_counts
    # each op actually changes sometimes
    assert all(n >= 3 for n in differs_counts.values()), differs_counts


def test_pair_all_resamples_every_op():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(mode="pair", resample="all"), OUT)
    counts = {op: 0 for op in OPS}
    for seed in range(100):
        p = maker.sample(torch.Generator().manual_seed(seed), H, W)
        first, fresh, _ = fresh_pair(cfg, seed)
        # view 2 is a full fresh sample
        assert torch.equal(p[0], first) and torch.equal(p[1], fresh)
        for op in differing_ops(p[0], p[1]):
            counts[op] += 1
    assert all(counts[op] >= 5 for op in OPS), counts
    assert counts["flip"] < 100  # binary ops also coincide sometimes
    # several ops differ at once in a typical sample (unlike "one")
    multi = sum(
        len(differing_ops(*maker.sample(torch.Generator().manual_seed(s), H, W))) > 2
        for s in range(30)
    )
    assert multi >= 20


def test_pair_bernoulli_extremes():
    cfg = AugmentConfig()
    never = ViewMaker(cfg, ViewsConfig(resample="bernoulli", resample_p=0.0), OUT)
    always = ViewMaker(cfg, ViewsConfig(resample="bernoulli", resample_p=1.0), OUT)
    for seed in range(40):
        first, fresh, _ = fresh_pair(cfg, seed)
        p0 = never.sample(torch.Generator().manual_seed(seed), H, W)
        # only the base op is fresh
        assert torch.equal(p0[1], with_ops_from(first, fresh, ["crop"]))
        assert differing_ops(p0[0], p0[1]) <= {"crop"}
        p1 = always.sample(torch.Generator().manual_seed(seed), H, W)
        assert torch.equal(p1[0], first) and torch.equal(p1[1], fresh)


def test_pair_bernoulli_intermediate_rate():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(resample="bernoulli", resample_p=0.5), OUT)
    n_resampled = []
    for seed in range(100):
        first, fresh, g = fresh_pair(cfg, seed)
        draws = torch.rand(5, generator=g)
        expected_ops = ["crop"] + [op for op, u in zip(OPS[1:], draws.tolist()) if u < 0.5]
        p = maker.sample(torch.Generator().manual_seed(seed), H, W)
        assert torch.equal(p[1], with_ops_from(first, fresh, expected_ops))
        n_resampled.append(len(expected_ops) - 1)
    mean = sum(n_resampled) / len(n_resampled)
    assert 2.0 < mean < 3.0  # 5 ops x 0.5


def test_pair_one_without_base_changes_exactly_one_op():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(base=[], resample="one"), OUT)
    assert maker.others == list(OPS)
    crop_changed = 0
    for seed in range(120):
        p = maker.sample(torch.Generator().manual_seed(seed), H, W)
        first, fresh, g = fresh_pair(cfg, seed)
        picked = OPS[int(torch.randint(len(OPS), (1,), generator=g))]
        assert torch.equal(p[1], with_ops_from(first, fresh, [picked]))
        diff = differing_ops(p[0], p[1])
        assert len(diff) <= 1 and diff <= {picked}
        crop_changed += diff == {"crop"}
    assert 5 <= crop_changed <= 45  # crop is picked about 1 time in 6


# ------------------------------------------------------------------------------------------
# factorized mode
def test_factorized_views_differ_from_anchor_in_one_op_each():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(mode="factorized"), OUT)
    k = len(OPS)
    assert maker.num_views == k + 1
    assert maker.pairs().tolist() == [[0, j + 1] for j in range(k)]
    counts = {op: 0 for op in OPS}
    for seed in range(40):
        p = maker.sample(torch.Generator().manual_seed(seed), H, W)
        assert p.shape == (k + 1, len(neutral_params()))
        for j, op in enumerate(OPS):
            diff = differing_ops(p[0], p[j + 1])
            assert diff <= {op}, (seed, op, diff)
            counts[op] += bool(diff)
        # the strengths of the factorized pairs are zero for every op but op k
        d = difference_strength(p[0].expand(k, -1), p[1:], cfg, list(OPS))  # [K, K]
        assert torch.equal(d * (1 - torch.eye(k)), torch.zeros(k, k))
    assert all(counts[op] >= 4 for op in OPS), counts


def test_pair_mode_pairs():
    maker = ViewMaker(AugmentConfig(), ViewsConfig(), OUT)
    assert maker.pairs().tolist() == [[0, 1]] * len(OPS)


def test_restricted_ops_give_k_two():
    cfg = AugmentConfig(ops=["crop", "blur"])
    for mode in ("pair", "factorized"):
        maker = ViewMaker(cfg, ViewsConfig(mode=mode), OUT)
        assert maker.ops == ["crop", "blur"]
        assert maker.pairs().shape == (2, 2)
        assert maker.num_views == (2 if mode == "pair" else 3)
    maker = ViewMaker(cfg, ViewsConfig(resample="all"), OUT)
    p = maker.sample(torch.Generator().manual_seed(3), H, W)
    for op in ("flip", "color_jitter", "grayscale", "solarize"):  # ops not in use stay neutral
        assert torch.equal(p[:, PARAM_SLICES[op]], neutral_params()[PARAM_SLICES[op]].expand(2, -1))
    d = pair_strengths(p.unsqueeze(0), maker.pairs(), cfg, maker.ops)
    assert d.shape == (1, 2)


def test_unknown_base_op_is_rejected_with_valid_list():
    with pytest.raises(ValueError) as info:
        ViewMaker(AugmentConfig(), ViewsConfig(base=["crop", "rotate"]), OUT)
    message = str(info.value)
    assert "rotate" in message
    assert all(op in message for op in OPS)


# --------------------------------------------------------------------------------------------------
# replay
def _image(seed=0, h=H, w=W):
    return torch.randint(
        0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("mode", ["pair", "factorized"])
def test_views_replay_pixel_for_pixel_from_recorded_params(mode):
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(mode=mode, resample="all"), OUT)
    image = _image()
    views, p = maker(image, torch.Generator().manual_seed(11))
    assert views.dtype == torch.uint8
    assert views.shape == (maker.num_views, 3, OUT, OUT)
    assert p.shape == (maker.num_views, len(neutral_params()))
    replayer = Augment(cfg, OUT)  # a new instance: nothing but the parameters is needed
    for v in range(maker.num_views):
        assert torch.equal(views[v], replayer(image, p[v]))
    assert torch.equal(p, maker.sample(torch.Generator().manual_seed(11), H, W))


def test_sample_generator_determinism():
    maker = ViewMaker(AugmentConfig(), ViewsConfig(), OUT)
    image = _image(1)
    v1, p1 = maker(image, sample_generator(5, 2, 7))
    v2, p2 = maker(image, sample_generator(5, 2, 7))
    assert torch.equal(v1, v2) and torch.equal(p1, p2)
    others = [
        maker.sample(sample_generator(*key), H, W) for key in [(5, 3, 7), (5, 2, 8), (6, 2, 7)]
    ]
    for q in others:
        assert not torch.equal(q, p1)
    # the draws of different epochs are not shifted copies of each other
    a = sample_generator(0, 0, 0).initial_seed()
    b = sample_generator(0, 1, 0).initial_seed()
    assert a != b


class _TinyImages(ImageDataset):
    def __init__(self, n):
        super().__init__()
        self.images = [_image(i, 20, 28) for i in range(n)]

    def __len__(self):
        return len(self.images)

    def _load(self, index):
        return self.images[index], {}


def test_view_dataset_keys_decode_epoch_and_index():
    images = _TinyImages(5)
    maker = ViewMaker(AugmentConfig(), ViewsConfig(), OUT)
    data = ViewDataset(images, maker, seed=3)
    assert len(data) == 5
    key = 2 * 5 + 4  # epoch 2, image 4
    views, p = data[key]
    ref_views, ref_p = maker(images.images[4], sample_generator(3, 2, 4))
    assert torch.equal(views, ref_views) and torch.equal(p, ref_p)
    _, p_other_epoch = data[4]  # epoch 0, same image
    assert not torch.equal(p, p_other_epoch)
    views_again, p_again = data[key]
    assert torch.equal(views, views_again) and torch.equal(p, p_again)


def test_loader_batches_equal_per_key_views_with_and_without_workers():
    """The DataLoader renders whole batches (__getitems__); pixels match one key at a time, any
    worker count."""
    from torch.utils.data import DataLoader

    from pretrain.data import collate_rendered

    data = ViewDataset(_TinyImages(12), ViewMaker(AugmentConfig(), ViewsConfig(), OUT), seed=5)
    keys = [13, 2, 7, 20, 5, 11]
    batches = []
    for workers in (0, 2):
        loader = DataLoader(
            data, batch_size=3, sampler=keys, collate_fn=collate_rendered, num_workers=workers
        )
        batches.append([b for b in loader])
    for (views_0, p_0), (views_2, p_2) in zip(*batches):
        assert (
            views_0.shape == (3, 2, 3, OUT, OUT)
            and torch.equal(views_0, views_2)
            and torch.equal(p_0, p_2)
        )
    first_views, first_params = batches[0][0]
    for row, key in enumerate(keys[:3]):
        views, p = data[key]
        assert torch.equal(first_views[row], views) and torch.equal(first_params[row], p)


# ------------------------------------------------------------------------------------------- epoch
# sampler
def test_epoch_sampler_keys_unique_and_in_epoch():
    size = 37
    sampler = EpochSampler(size, batch_size=4, seed=1)
    assert len(sampler) == 36 and sampler.batches_per_epoch == 9
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == len(sampler) == 36
        assert len(set(keys)) == len(keys)
        assert all(k // size == epoch for k in keys)
    sampler.set_epoch(0)
    e0 = [k % size for k in sampler]
    sampler.set_epoch(1)
    e1 = [k % size for k in sampler]
    assert e0 != e1  # reshuffled each epoch
    sampler.set_epoch(0)
    assert [k % size for k in sampler] == e0  # and deterministic


def test_epoch_sampler_ranks_are_disjoint_equal_shares():
    size = 50
    ranks = [EpochSampler(size, batch_size=4, seed=2, rank=r, world_size=2) for r in range(2)]
    shares = []
    for s in ranks:
        s.set_epoch(1)
        shares.append(list(s))
    assert len(shares[0]) == len(shares[1]) == 24  # 50 // (4 x 2) = 6 batches of 4
    assert len(ranks[0]) == 24 and ranks[0].batches_per_epoch == 6
    assert not set(shares[0]) & set(shares[1])
    assert all(k // size == 1 for k in shares[0] + shares[1])


def test_epoch_sampler_skip_yields_tail():
    sampler = EpochSampler(40, batch_size=4, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    for skip in (0, 4, 12, 40):
        sampler.set_epoch(2, skip=skip)
        tail = list(sampler)
        assert tail == full[skip:]
        assert len(sampler) == len(full) - skip


def test_epoch_sampler_too_small_raises():
    with pytest.raises(ValueError, match=r"3 images cannot fill one batch of 4"):
        EpochSampler(3, batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"batch_size"):
        EpochSampler(7, batch_size=4, seed=0, world_size=2)
    EpochSampler(8, batch_size=4, seed=0, world_size=2)  # exactly one batch each is fine


def test_rendering_apart_from_sampling_gives_the_batch_views():
    maker = ViewMaker(AugmentConfig(), ViewsConfig(mode="factorized"), 24)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((40, 40), (32, 48))]

    def generators():
        return [torch.Generator().manual_seed(s) for s in (3, 4)]

    views, params = maker.batch(images, generators())
    assert torch.equal(maker.sample_batch(images, generators()), params)
    assert torch.equal(maker.render(images, params), views)
    with pytest.raises(ValueError, match="2 images but parameters for 1"):
        maker.render(images, params[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_rendered_on_cuda_match_the_cpu():
    # tolerance (docs/reliability.md): CUDA's antialiased resize and float ops round differently
    maker = ViewMaker(AugmentConfig(), ViewsConfig(mode="factorized"), 64)
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 80), generator=gen, dtype=torch.uint8)] * 32
    params = maker.sample_batch(images, [torch.Generator().manual_seed(s) for s in range(32)])
    cpu = maker.render(images, params).int()
    cuda = maker.render([i.cuda() for i in images], params).cpu().int()
    diff = (cpu - cuda).abs().float()
    limit = DEVICE_RENDER_TOLERANCE
    assert diff.mean() <= limit["mean"]
    assert torch.quantile(diff.flatten()[::7], 0.999) <= limit["q999"]
