"""The AND loss's subspace targets (``loss.target_weight``): each owning op's dimensions predict
that op's parameter difference; the gradient reaches the owned dimensions only."""

import pytest
import torch
import torch.nn.functional as F

from core.config import ConfigError, load_config
from pretrain.config import PretrainConfig
from pretrain.losses.mast_and import MASTAndLoss, SubspaceTargetHeads
from pretrain.train import build_model
from tests.pretrain.test_augself import SMALL, sampled_params


def test_subspace_targets_reach_only_the_owned_dimensions():
    torch.manual_seed(0)
    owned = ["flip", "color_jitter", "grayscale", "blur", "solarize"]
    dim = 12
    # a fixed assignment: dims 0-1 shared, then two dims per op
    owner = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    assignment = F.one_hot(owner, 6).T.float()
    heads = SubspaceTargetHeads(dim, owned, hidden=16)
    z = torch.randn(2, 32, dim, requires_grad=True)
    params = sampled_params(32)
    gates = torch.ones(32, 6)
    loss = MASTAndLoss(list(range(1, 6)), target_weight=1.0)
    with_target, terms = loss(z, torch.tensor([[0, 1]] * 6), gates, assignment, None,
                              heads(None, z, assignment), params)  # fmt: skip
    without, _ = MASTAndLoss(list(range(1, 6)))(z, torch.tensor([[0, 1]] * 6), gates, assignment)
    assert {f"target_{n}" for n in ("flip", "color", "gray", "blur", "sol")} <= set(terms)
    (g_with,) = torch.autograd.grad(with_target, z)
    (g_without,) = torch.autograd.grad(without, z)
    extra = (g_with - g_without).abs().sum(dim=(0, 1))  # the target's gradient, per dimension
    assert extra[:2].max() < 1e-6 and (extra[2:] > 0).all()
    with pytest.raises(ValueError, match="predictions"):
        loss(z, torch.tensor([[0, 1]] * 6), gates, assignment)


def test_subspace_targets_need_the_and_combination():
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=mast_nounc", "loss.target_weight=1"])
    with pytest.raises(ValueError, match="loss.combine=and"):
        build_model(cfg, 6, cfg.augment.ops)
    cfg = load_config(
        PretrainConfig,
        None,
        [*SMALL, "method=mast_nounc", "loss.combine=and", "views.resample=all"]
        + ["loss.target_weight=1"],
    )
    model = build_model(cfg, 6, cfg.augment.ops)
    assert isinstance(model.heads, SubspaceTargetHeads) and model.heads.names == [
        "flip",
        "color",
        "gray",
        "blur",
        "sol",
    ]
    plain = load_config(PretrainConfig, None, [*SMALL, "method=mast_nounc", "loss.combine=and"])
    assert build_model(plain, 6, plain.augment.ops).heads is None


def test_the_target_heads_take_their_hidden_width_from_the_config():
    over = [*SMALL, "method=mast_nounc", "loss.combine=and", "views.resample=all"]
    cfg = load_config(
        PretrainConfig, None, [*over, "loss.target_weight=1", "loss.target_hidden=24"]
    )
    model = build_model(cfg, 6, cfg.augment.ops)
    first = model.heads.heads[0][0]  # the first Linear of the flip head: 2 x embed_dim -> hidden
    assert first.out_features == 24 and first.in_features == 2 * model.embed_dim
    with pytest.raises(ConfigError, match="loss.target_hidden"):
        load_config(PretrainConfig, None, [*over, "loss.target_hidden=0"])
