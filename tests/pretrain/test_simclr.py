"""SimCLR's NT-Xent against lightly's (the test-only oracle, requirements/oracles.txt): value and
gradients; and what the loss must do at its extremes."""

import math

import pytest
import torch
from lightly.loss import NTXentLoss as LightlyNTXent

from core.config import load_config
from pretrain.config import PretrainConfig
from pretrain.losses.simclr import NTXentLoss
from pretrain.train import build_loss


@pytest.mark.parametrize(("n", "d", "temperature"), [(8, 16, 0.1), (32, 8, 0.2), (5, 64, 0.5)])
def test_nt_xent_matches_lightly_value_and_gradients(n, d, temperature):
    torch.manual_seed(n)
    z_a = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    z_b = (z_a.detach() + 0.5 * torch.randn(n, d, dtype=torch.float64)).requires_grad_(True)
    ours, terms = NTXentLoss(temperature)(z_a, z_b)
    theirs = LightlyNTXent(temperature=temperature, memory_bank_size=0)(z_a, z_b)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    assert terms["nt_xent"].item() == pytest.approx(theirs.item(), rel=1e-10)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(theirs, (z_a, z_b)), strict=True
    ):
        assert torch.allclose(g_ours, g_theirs, rtol=1e-8, atol=1e-12)


def test_nt_xent_extremes():
    # orthonormal embeddings, the views identical: every positive at similarity 1, every negative
    # at 0, so the loss is log(1 + (2n - 2) e^(-1/T)) and each positive is the nearest candidate
    n, t = 6, 0.2
    z = torch.eye(n, 10)
    loss, terms = NTXentLoss(t)(z, 3 * z)  # the loss reads directions only
    assert loss.item() == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / t)), rel=1e-6)
    assert terms["pos_top1"].item() == 1.0
    # a collapsed embedding cannot tell the positive from the negatives: log(2n - 1)
    collapsed, _ = NTXentLoss(t)(torch.ones(n, 10), torch.ones(n, 10))
    assert collapsed.item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    with pytest.raises(ValueError, match="temperature must be positive"):
        NTXentLoss(0.0)


def test_the_config_sets_the_temperature():
    cfg = load_config(PretrainConfig, None, ["method=simclr"])
    assert cfg.loss.options == {"temperature": 0.1}
    loss = build_loss(
        load_config(PretrainConfig, None, ["method=simclr", "loss.options.temperature=0.5"])
    )
    assert isinstance(loss, NTXentLoss) and loss.temperature == 0.5
