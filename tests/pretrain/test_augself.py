"""AugSelf against a transcription of its official objective (hankook/AugSelf: SSObjective and
extract_diff), value and gradients; its targets on views whose parameters are known; the config's
options and errors."""

import pytest
import torch
import torch.nn.functional as F

from core.augment import PARAM_SLICES, AugmentConfig
from core.config import load_config
from core.views import ViewMaker, ViewsConfig
from pretrain.config import PretrainConfig
from pretrain.losses.augself import AugSelfHeads, AugSelfLoss, both_orders, parameter_target
from pretrain.train import build_loss, build_model

SMALL = ["model.arch=resnet18", "model.base_width=4", "model.expander=32-32"]


def sampled_params(n: int, seed: int = 0, augment: AugmentConfig | None = None) -> torch.Tensor:
    """[n, 2, P]: VICReg's pairs drawn by the suite's own view maker (no pixels needed)."""
    maker = ViewMaker(augment or AugmentConfig(), ViewsConfig(resample="all"), 32)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([maker.sample(generator, 64, 64) for _ in range(n)])


# -- the official objective, transcribed: the kornia parameter dicts it reads are rebuilt from the
# -- suite's parameter rows, then the differences and losses are computed as its code does.
def official_weights(jitter: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    applied = jitter[:, 0] > 0.5
    w = torch.zeros(jitter.shape[0], 4, dtype=jitter.dtype)
    ranges = [
        (1 - cfg.brightness, 1 + cfg.brightness),
        (1 - cfg.contrast, 1 + cfg.contrast),
        (1 - cfg.saturation, 1 + cfg.saturation),
    ]
    for i, (lo, hi) in enumerate(ranges):
        w[applied, i] = (jitter[applied, 1 + i] - 1) / (hi - lo)
    w[applied, 3] = jitter[applied, 4] / (cfg.hue - -cfg.hue)
    return w


def official_diff(p1: torch.Tensor, p2: torch.Tensor, cfg: AugmentConfig) -> dict:
    crop1, crop2 = p1[:, PARAM_SLICES["crop"]].clone(), p2[:, PARAM_SLICES["crop"]].clone()
    f1 = p1[:, PARAM_SLICES["flip"]][:, 0] > 0.5
    f2 = p2[:, PARAM_SLICES["flip"]][:, 0] > 0.5
    center1 = crop1[:, :2] + crop1[:, 2:] / 2
    center2 = crop2[:, :2] + crop2[:, 2:] / 2
    center1[f1, 1] = 1 - center1[f1, 1]
    center2[f1, 1] = 1 - center2[f1, 1]
    return {
        "crop": torch.cat([center1 - center2, crop1[:, 2:] - crop2[:, 2:]], 1),
        "flip": (f1 == f2).float().unsqueeze(-1).to(p1.dtype),
        "color": official_weights(p1[:, PARAM_SLICES["color_jitter"]], cfg)
        - official_weights(p2[:, PARAM_SLICES["color_jitter"]], cfg),
    }


def official_objective(predictor, z1, z2, d1, d2, weights: dict) -> torch.Tensor:
    z = torch.cat([torch.cat([z1, z2], 1), torch.cat([z2, z1], 1)], 0)
    d = {k: torch.cat([d1[k], d2[k]], 0) for k in d1}
    total = 0
    for name, weight in weights.items():
        p = predictor[name](z)
        if name == "flip":
            total = total + weight * F.binary_cross_entropy_with_logits(p, d[name])
        else:
            total = total + weight * F.mse_loss(torch.tanh(p), d[name])
    return total


@pytest.mark.parametrize("weights", [{"crop": 1.0, "color": 1.0}, {"crop": 0.5, "flip": 2.0}])
def test_augself_matches_the_official_objective_value_and_gradients(weights):
    torch.manual_seed(0)
    cfg = AugmentConfig()
    params = sampled_params(24).double()
    heads = AugSelfHeads(8, list(weights), hidden=16).double()
    y = torch.randn(2, 24, 8, dtype=torch.float64, requires_grad=True)
    z_a, z_b = torch.randn(2, 24, 6, dtype=torch.float64).unbind(0)
    ours, terms = AugSelfLoss(cfg, weights)(z_a, z_b, heads(y, None), params)
    vicreg = terms["inv"] * 25 + terms["var"] * 25 + terms["cov"]
    d1 = official_diff(params[:, 0], params[:, 1], cfg)
    d2 = official_diff(params[:, 1], params[:, 0], cfg)
    theirs = official_objective(heads.heads, y[0], y[1], d1, d2, weights)
    assert (ours - vicreg).item() == pytest.approx(theirs.item(), rel=1e-10)
    (g_ours,) = torch.autograd.grad(ours, y)
    (g_theirs,) = torch.autograd.grad(theirs, y)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-8, atol=1e-12) and g_ours.abs().sum() > 0


def test_targets_on_views_with_known_parameters():
    cfg = AugmentConfig()
    base = sampled_params(1)[0, 0]
    a, b = base.clone(), base.clone()
    # same views: every regression target 0, flips equal
    for name in ("crop", "color", "blur", "sol", "gray"):
        assert parameter_target(a[None], b[None], name, cfg).abs().max() == 0
    assert parameter_target(a[None], b[None], "flip", cfg).item() == 1.0
    # view b: box shifted right by 0.1 and half as tall, flipped; brightness at its top
    a[PARAM_SLICES["crop"]] = torch.tensor([0.1, 0.2, 0.6, 0.5])
    a[PARAM_SLICES["flip"]] = 0.0
    b[PARAM_SLICES["crop"]] = torch.tensor([0.1, 0.3, 0.3, 0.5])
    b[PARAM_SLICES["flip"]] = 1.0
    a[PARAM_SLICES["color_jitter"]] = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    b[PARAM_SLICES["color_jitter"]] = torch.tensor([1.0, 1 + cfg.brightness, 1.0, 1.0, 0.0, 0.0])
    crop = parameter_target(a[None], b[None], "crop", cfg)[0]
    assert torch.allclose(crop, torch.tensor([0.4 - 0.25, -0.1, 0.3, 0.0]), atol=1e-6)
    assert parameter_target(a[None], b[None], "flip", cfg).item() == 0.0
    color = parameter_target(a[None], b[None], "color", cfg)[0]
    assert torch.allclose(color, torch.tensor([-0.5, 0.0, 0.0, 0.0]))
    # both orders: the second half is the negated difference (crop's x only where a is unflipped)
    params = torch.stack([a, b])[None]
    assert torch.allclose(both_orders(params, "color", cfg), torch.stack([color, -color]))


def test_config_options_and_errors():
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=augself"])
    assert cfg.loss.options == {
        "crop": 1.0,
        "color": 1.0,
        "flip": 0.0,
        "blur": 0.0,
        "sol": 0.0,
        "gray": 0.0,
        "hidden": 512,
    }
    loss = build_loss(load_config(PretrainConfig, None, ["method=augself", "loss.options.crop=0"]))
    assert isinstance(loss, AugSelfLoss) and loss.weights == {"color": 1.0}
    model = build_model(cfg, 6, cfg.augment.ops)
    assert isinstance(model.heads, AugSelfHeads) and set(model.heads.heads) == {"crop", "color"}
    no_jitter = load_config(
        PretrainConfig, None, [*SMALL, "method=augself", "augment.ops=[crop,flip,grayscale,blur]"]
    )
    with pytest.raises(ValueError, match="loss.options.color=0"):
        build_model(no_jitter, 4, no_jitter.augment.ops)
    factorized = load_config(
        PretrainConfig, None, [*SMALL, "method=augself", "views.mode=factorized"]
    )
    with pytest.raises(ValueError, match="views.mode=pair"):
        build_model(factorized, 6, factorized.augment.ops)
