"""The AND loss's subspace targets (``loss.target_weight``): each owning op's dimensions predict
that op's parameter difference; the gradient reaches the owned dimensions only."""

import pytest
import torch
import torch.nn.functional as F

from core.config import ConfigError, load_config
from pretrain.config import PretrainConfig
from pretrain.losses.mast_and import GroupedTargetHeads, MASTAndLoss, SubspaceTargetHeads
from pretrain.optim import build_optimizer, param_groups
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


@pytest.mark.parametrize("train", [True, False])
def test_grouped_target_heads_compute_the_separate_heads_function(train):
    """Same weights: same predictions, same gradients for z, the assignment and every weight, same
    batch-norm statistics after the step, up to float rounding."""
    torch.manual_seed(0)
    owned = ["flip", "color_jitter", "grayscale", "blur", "solarize"]
    separate = SubspaceTargetHeads(12, owned, hidden=16)
    grouped = GroupedTargetHeads(12, owned, hidden=16).from_separate(separate)
    assert grouped.names == separate.names
    z = torch.randn(2, 32, 12, requires_grad=True)
    assignment = torch.softmax(torch.randn(6, 12), 0).requires_grad_()
    params = sampled_params(32)
    loss = MASTAndLoss(list(range(1, 6)), target_weight=1.0)
    pairs, gates = torch.tensor([[0, 1]] * 6), torch.ones(32, 6)
    grads, outputs = [], []
    for heads in (separate, grouped):
        heads.train(train)
        predictions = heads(None, z, assignment)
        total, _ = loss(z, pairs, gates, assignment, None, predictions, params)
        weights = list(heads.parameters())
        grads.append(torch.autograd.grad(total, [z, assignment, *weights]))
        outputs.append(predictions)
    for name in separate.names:
        assert outputs[1][name].shape == outputs[0][name].shape
        torch.testing.assert_close(outputs[1][name], outputs[0][name], rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(grads[1][:2], grads[0][:2]):  # z and the assignment
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
    # the weights' gradients, taken back to each separate head's layout
    w1, w2, w3, b3, bn1w, bn1b, bn2w, bn2b = grads[1][2:]
    for k in range(5):
        # one head's: Linear, BatchNorm (weight, bias), Linear, BatchNorm, Linear (weight, bias)
        theirs = grads[0][2 + 8 * k : 2 + 8 * (k + 1)]
        n, rows = grouped.widths[k], slice(k * 16, (k + 1) * 16)
        mine = [w1[k].T, bn1w[rows], bn1b[rows], w2[k].T, bn2w[rows], bn2b[rows], w3[k, :, :n].T]
        for a, b in zip([*mine, b3[k, 0, :n]], theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert not w3[k, :, n:].any() and not b3[k, 0, n:].any()  # padding: no gradient
    if train:  # the running statistics moved alike
        for k, head in enumerate(separate.heads):
            rows = slice(k * 16, (k + 1) * 16)
            torch.testing.assert_close(grouped.bn1.running_mean[rows], head[1].running_mean)
            torch.testing.assert_close(grouped.bn2.running_var[rows], head[4].running_var)


def test_the_config_picks_grouped_target_heads():
    over = [*SMALL, "method=mast_nounc", "loss.combine=and", "views.resample=all"]
    cfg = load_config(
        PretrainConfig, None, [*over, "loss.target_weight=1", "loss.target_grouped=true"]
    )
    model = build_model(cfg, 6, cfg.augment.ops)
    assert isinstance(model.heads, GroupedTargetHeads)
    assert model.heads.w1.shape == (5, 2 * model.embed_dim, cfg.loss.target_hidden)


@pytest.mark.parametrize("optimizer", ["lars", "adamw", "sgd"])
@pytest.mark.parametrize("foreach", [False, True])
def test_grouped_target_heads_train_as_separate_heads_do(optimizer, foreach):
    """Same weights, same batches: after three steps of each optimiser the grouped heads hold the
    separate heads' weights, to float rounding. LARS takes one trust ratio per head's matrix and
    leaves the last biases alone (as it leaves the separate heads' 1-d biases); AdamW decays no
    bias; the padding stays zero."""
    if foreach and optimizer != "lars":
        pytest.skip("foreach is LARS's flag")
    torch.manual_seed(0)
    owned = ["flip", "color_jitter", "grayscale", "blur", "solarize"]
    # float64: AdamW divides by the gradient's own size, so float32 rounding of a small gradient
    # became a 1e-4 relative difference in one weight under AVX2 kernels
    separate = SubspaceTargetHeads(12, owned, hidden=16).double()
    grouped = GroupedTargetHeads(12, owned, hidden=16).double().from_separate(separate)
    start = grouped.w1.detach().clone()
    opts = [
        build_optimizer(h, optimizer, lr=0.5, weight_decay=0.1, mask_lr=0.5)
        for h in (separate, grouped)
    ]
    for opt in opts:
        opt.foreach = foreach
    loss = MASTAndLoss(list(range(1, 6)), target_weight=1.0)
    pairs, gates = torch.tensor([[0, 1]] * 6), torch.ones(32, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.randn(2, 32, 12, generator=gen, dtype=torch.float64)
        assignment = torch.softmax(torch.randn(6, 12, generator=gen, dtype=torch.float64), 0)
        params = sampled_params(32).double()
        for heads, opt in zip((separate, grouped), opts):
            opt.zero_grad(set_to_none=True)
            total, _ = loss(z, pairs, gates, assignment, None, heads(None, z, assignment), params)
            total.backward()
            opt.step()
    for k, head in enumerate(separate.heads):
        first, second, last = [m for m in head if isinstance(m, torch.nn.Linear)]
        n = grouped.widths[k]
        for mine, theirs in (
            (grouped.w1[k].T, first.weight),
            (grouped.w2[k].T, second.weight),
            (grouped.w3[k, :, :n].T, last.weight),
            (grouped.b3[k, 0, :n], last.bias),
        ):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-11)
        assert not grouped.w3[k, :, n:].any() and not grouped.b3[k, 0, n:].any()
    # the steps moved the weights by far more than the tolerance: not a trivial pass
    assert (grouped.w1 - start).abs().max() > 1e-3
    groups = param_groups(grouped, weight_decay=0.1, lr=0.5, mask_lr=0.5)
    stacked = {id(grouped.w1), id(grouped.w2), id(grouped.w3)}
    assert [({id(p) for p in g["params"]} == stacked) for g in groups] == [True, False]
    assert id(grouped.b3) in {id(p) for p in groups[1]["params"]}  # with the biases and norms


def test_grouped_heads_start_with_zero_padding():
    torch.manual_seed(0)
    heads = GroupedTargetHeads(8, ["flip", "color_jitter", "blur"], hidden=4)
    for k, n in enumerate(heads.widths):
        assert heads.w3[k, :, :n].abs().sum() > 0 and not heads.w3[k, :, n:].any()
        assert not heads.b3[k, :, n:].any()
