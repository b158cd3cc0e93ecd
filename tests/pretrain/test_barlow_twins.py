"""Barlow Twins against lightly's loss (the test-only oracle, requirements/oracles.txt): value and
gradients; and what the loss must do at its extremes."""

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins

from core.config import load_config
from pretrain.config import PretrainConfig
from pretrain.losses.barlow_twins import BarlowTwinsLoss
from pretrain.train import build_loss


@pytest.mark.parametrize(("n", "d", "lambd"), [(16, 8, 5e-3), (8, 32, 5e-3), (64, 16, 0.1)])
def test_barlow_twins_matches_lightly_value_and_gradients(n, d, lambd):
    torch.manual_seed(d)
    z_a = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    z_b = (z_a.detach() + torch.randn(n, d, dtype=torch.float64)).requires_grad_(True)
    ours, terms = BarlowTwinsLoss(lambd)(z_a, z_b)
    theirs = LightlyBarlowTwins(lambda_param=lambd)(z_a, z_b)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert (terms["on_diag"] + lambd * terms["off_diag"]).item() == pytest.approx(ours.item())
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b)), strict=True
    ):
        assert torch.allclose(g_ours, g_theirs, rtol=1e-7, atol=1e-10)


def test_barlow_twins_extremes():
    torch.manual_seed(0)
    # identical views with decorrelated, standardised dimensions: C = I, the loss is 0
    ones = torch.ones(64, 1, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([ones, torch.randn(64, 8, dtype=torch.float64)], dim=1))
    z = 8 * q[:, 1:]  # orthogonal to the ones column: zero means, and variance 1
    loss, terms = BarlowTwinsLoss()(z, 2 * z + 1)  # affine per dimension: the same C
    assert terms["off_diag"].item() == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    # independent views: C ~ 0, the on-diagonal term ~ d
    loss, terms = BarlowTwinsLoss()(torch.randn(4096, 8), torch.randn(4096, 8))
    assert terms["on_diag"].item() == pytest.approx(8.0, rel=0.02)


def test_the_config_sets_lambda():
    assert load_config(PretrainConfig, None, ["method=barlow_twins"]).loss.options == {
        "lambd": 5e-3
    }
    cfg = load_config(PretrainConfig, None, ["method=barlow_twins", "loss.options.lambd=0.01"])
    loss = build_loss(cfg)
    assert isinstance(loss, BarlowTwinsLoss) and loss.lambd == 0.01
