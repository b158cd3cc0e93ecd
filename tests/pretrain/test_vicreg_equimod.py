"""Equivariant VICReg (EquiMod style) against a transcription of SIE's ``VICRegEquiMod`` loss
(facebookresearch/SIE, src/models.py), value and gradients; the encoding of the parameter
difference; the predictor's input; the config's options."""

import pytest
import torch
import torch.nn.functional as F

from core.augment import PARAM_SLICES, AugmentConfig
from core.config import load_config
from pretrain.config import PretrainConfig
from pretrain.losses.vicreg_equimod import (
    EquiModHeads,
    VICRegEquiModLoss,
    encode_difference,
)
from pretrain.train import build_loss, build_model
from tests.pretrain.test_augself import SMALL, sampled_params


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _sie_part(x, y, pred_or_x, target, sim, std, cov, batch, emb):
    """One half of SIE's loss as its code writes it: the MSE term, then std and cov on x, y."""
    repr_loss = F.mse_loss(pred_or_x, target)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch - 1)
    cov_y = (y.T @ y) / (batch - 1)
    cov_loss = _off_diagonal(cov_x).pow_(2).sum().div(emb) + _off_diagonal(cov_y).pow_(2).sum().div(
        emb
    )
    return sim * repr_loss + std * std_loss + cov * cov_loss


def sie_vicreg_equimod(x_inv, y_inv, x_equi, y_equi, y_equi_pred, sim, std, cov, equi_factor):
    batch, emb = x_inv.shape
    loss_inv = _sie_part(x_inv, y_inv, x_inv, y_inv, sim, std, cov, batch, emb)
    loss_equi = _sie_part(x_equi, y_equi, y_equi_pred, y_equi, sim, std, cov, batch, emb)
    return loss_inv + equi_factor * loss_equi


@pytest.mark.parametrize(("n", "d", "factor"), [(16, 8, 0.45), (32, 12, 4.5)])
def test_matches_sie_value_and_gradients(n, d, factor):
    torch.manual_seed(d)
    parts = [torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    x_inv, y_inv, x_equi, y_equi, pred = parts
    ours, terms = VICRegEquiModLoss(factor, 10.0, 10.0, 1.0)(
        x_inv, y_inv, {"e_a": x_equi, "e_b": y_equi, "predicted": pred}
    )
    theirs = sie_vicreg_equimod(x_inv, y_inv, x_equi, y_equi, pred, 10.0, 10.0, 1.0, factor)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    assert {"inv", "var", "cov", "equi_pred", "equi_var", "equi_cov"} <= set(terms)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, parts), torch.autograd.grad(theirs, parts), strict=True
    ):
        assert torch.allclose(g_ours, g_theirs, rtol=1e-8, atol=1e-12)


def test_the_encoding_and_the_predictor_input():
    cfg = AugmentConfig()
    params = sampled_params(8)
    t = encode_difference(params, cfg)
    assert t.shape == (8, 12)
    same = torch.stack([params[:, 0], params[:, 0]], 1)
    t_same = encode_difference(same, cfg)
    # identical views: every difference 0, the flips agree (the one binary part, column 8)
    assert torch.equal(t_same[:, 8], torch.ones(8)) and t_same[:, :8].abs().max() == 0
    assert t_same[:, 9:].abs().max() == 0
    flipped = params.clone()
    flipped[:, 1, PARAM_SLICES["flip"]] = 1 - flipped[:, 0, PARAM_SLICES["flip"]]
    assert encode_difference(flipped, cfg)[:, 8].sum() == 0
    # the prediction depends on t: the same embeddings with other parameters predict otherwise
    torch.manual_seed(0)
    heads = EquiModHeads(8, "16-16", cfg).eval()
    features = torch.randn(2, 8, 8)
    a, b = heads(features, None, None, params), heads(features, None, None, same)
    assert torch.equal(a["e_a"], b["e_a"]) and not torch.allclose(a["predicted"], b["predicted"])
    with pytest.raises(ValueError, match="recorded parameters"):
        heads(features, None, None, None)


def test_config_builds_the_heads_and_the_loss():
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=vicreg_equimod"])
    assert cfg.loss.options == {"equi_factor": 0.45, "predictor_layers": 1}
    model = build_model(cfg, 6, cfg.augment.ops)
    assert isinstance(model.heads, EquiModHeads)
    assert model.heads.predictor[0].in_features == 32 + 12 and len(model.heads.predictor) == 1
    deep = load_config(
        PretrainConfig, None, [*SMALL, "method=vicreg_equimod", "loss.options.predictor_layers=3"]
    )
    assert len(build_model(deep, 6, deep.augment.ops).heads.predictor) == 5
    assert build_loss(cfg).equi_factor == 0.45
