"""Optimisation: LARS against an independent transcription of the official VICReg update, the
parameter groups (weights / biases and norms / masks and uncertainty head), the optimiser factory,
the learning-rate schedule and a weights_only round trip of the optimiser state."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from core.model import MaskBank, PretrainModel
from pretrain.optim import LARS, build_optimizer, lr_factor, param_groups, set_lr


class Tiny(nn.Module):
    """Weights, biases, BatchNorm, a zero-initialised weight (trust ratio's ||w|| = 0 branch), an
    unused parameter (no grad), learned masks and an uncertainty head: every kind of tensor the
    groups tell apart."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6))
        self.zero = nn.Linear(6, 6, bias=False)
        nn.init.zeros_(self.zero.weight)
        self.unused = nn.Parameter(torch.ones(3, 3))
        self.masks = MaskBank(2, 6, "learned", init_std=0.5, seed=1)
        self.uncertainty_head = nn.Sequential(
            nn.Linear(8, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)
        )

    def forward(self, x):
        h = self.body[:3](x)
        z = self.body[3](h)
        z = z + self.zero(z)
        m = self.masks()
        log_var = self.uncertainty_head(h)
        return (
            (z.unsqueeze(1) * m).pow(2).mean(0).sum()
            + (z - 1).pow(2).mean()
            + (log_var.exp() - 0.5).pow(2).mean()
        )


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny().double()


def reference_lars_step(model, state, lr, mask_lr, weight_decay, momentum=0.9, eta=0.001):
    """The update of the official VICReg LARS (main_vicreg.py), written out per tensor: decay and
    the trust ratio for weights only (exclude_bias_and_norm: every 1-d tensor); masks and the
    uncertainty head plain momentum SGD at their own lr."""
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.grad is None:
                continue
            special = name.startswith("masks.") or name.startswith("uncertainty_head.")
            g = w.grad.clone()
            if not special and w.ndim > 1:
                g = g + weight_decay * w
                w_norm, g_norm = w.norm(), g.norm()
                q = eta * w_norm / g_norm if (w_norm > 0 and g_norm > 0) else 1.0
                g = q * g
            mu = state.setdefault(name, torch.zeros_like(w))
            mu.mul_(momentum).add_(g)
            w.sub_((mask_lr if special else lr) * mu)


@pytest.mark.parametrize("foreach", [False, True])
def test_lars_matches_official_update_over_three_steps(foreach):
    """Both ways of updating: tensor by tensor (the CPU's) and a group at once (fused kernels, an
    accelerator's default), a zero weight and an unused tensor among them."""
    model = tiny()
    ref = copy.deepcopy(model)
    lr, mask_lr, wd = 0.8, 0.05, 0.1  # large weight decay so that its term matters
    opt = build_optimizer(model, "lars", lr=lr, weight_decay=wd, mask_lr=mask_lr)
    assert isinstance(opt, LARS) and opt.foreach is None
    opt.foreach = foreach
    ref_state = {}
    gen = torch.Generator().manual_seed(3)
    for step, factor in enumerate([1.0, 0.5, 0.25]):
        x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        set_lr(opt, factor)
        opt.zero_grad(set_to_none=True)
        model(x).backward()
        opt.step()
        ref.zero_grad(set_to_none=True)
        ref(x).backward()
        reference_lars_step(ref, ref_state, lr * factor, mask_lr * factor, wd)
        for (name, p), (_, r) in zip(model.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-12, msg=f"{name} after step {step}")
    # the updates were not trivial: the used tensors moved, the zero weight left zero, unused stayed
    start = tiny()
    for (name, p), (_, p0) in zip(model.named_parameters(), start.named_parameters()):
        if name == "unused":
            assert torch.equal(p, p0) and p not in opt.state
        # biases before BN get (almost) no grad
        elif name not in (
            "body.0.bias",
            "uncertainty_head.0.bias",
        ):
            assert not torch.equal(p, p0), name
    assert model.zero.weight.abs().sum() > 0


@pytest.mark.parametrize("foreach", [False, True])
def test_lars_trust_ratio_scales_weight_update(foreach):
    """One step from zero momentum: a weight moves by lr * eta * ||w|| / ||g + wd w|| * (g + wd
    w)."""
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = LARS(
        [
            dict(params=[w], weight_decay=0.5, lars=True),
            dict(params=[b], weight_decay=0.0, lars=False),
        ],
        lr=2.0,
        eta=0.01,
        foreach=foreach,
    )
    w.grad = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    b.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
    opt.step()
    g = torch.tensor([[1.0 + 1.5, -2.0 + 2.0]], dtype=torch.float64)  # g + 0.5 w = [2.5, 0]
    q = 0.01 * 5.0 / 2.5
    torch.testing.assert_close(
        w.detach(), torch.tensor([[3.0, 4.0]], dtype=torch.float64) - 2.0 * q * g
    )
    # 1 -+ 2 * 0.5
    torch.testing.assert_close(b.detach(), torch.tensor([0.0, 2.0], dtype=torch.float64))
    # second step: momentum 0.9 carries the first update
    w_before = w.detach().clone()
    w.grad = torch.zeros_like(w)
    opt.step()
    g2 = 0.5 * w_before
    q2 = 0.01 * w_before.norm() / g2.norm()
    torch.testing.assert_close(w.detach(), w_before - 2.0 * (0.9 * q * g + q2 * g2))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_lars_updates_a_group_at_once_as_it_updates_each_tensor(device):
    """float32, as training runs it: the fused update (an accelerator's default) gives the
    per-tensor one's weights and momentum to float rounding, and their states load into each
    other."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model = model.to(device)
    twin = copy.deepcopy(model)
    opts = [
        build_optimizer(m, "lars", lr=0.5, weight_decay=1e-2, mask_lr=0.1) for m in (model, twin)
    ]
    opts[0].foreach, opts[1].foreach = False, True
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(32, 6, generator=gen).to(device)
        for m, opt in zip((model, twin), opts):
            opt.zero_grad(set_to_none=True)
            m(x).pow(2).mean().backward()
            opt.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(
            opts[1].state[q]["momentum_buffer"], opts[0].state[p]["momentum_buffer"]
        )
    opts[0].load_state_dict(opts[1].state_dict())  # one format: no flag in the saved groups
    assert "foreach" not in opts[1].state_dict()["param_groups"][0]


# -------------------------------------------------------------------------------------------------
# groups
def _ids(params):
    return {id(p) for p in params}


@pytest.fixture(scope="module")
def mast_model():
    return PretrainModel(
        "resnet18",
        base_width=4,
        expander="16-8",
        num_ops=3,
        masks="learned",
        uncertainty=True,
        uncertainty_hidden=8,
    )


def test_param_groups_split(mast_model):
    groups = param_groups(mast_model, weight_decay=1e-6, lr=0.3, mask_lr=0.05)
    assert len(groups) == 3
    weights, flat, extra = groups
    special = _ids(mast_model.masks.parameters()) | _ids(mast_model.uncertainty_head.parameters())
    assert _ids(extra["params"]) == special
    assert mast_model.masks.logits.ndim == 2 and id(mast_model.masks.logits) in _ids(
        extra["params"]
    )
    assert all(p.ndim > 1 for p in weights["params"])
    assert all(p.ndim == 1 for p in flat["params"])
    expected_flat = {id(p) for p in mast_model.parameters() if p.ndim == 1 and id(p) not in special}
    expected_weights = {
        id(p) for p in mast_model.parameters() if p.ndim > 1 and id(p) not in special
    }
    assert _ids(flat["params"]) == expected_flat and _ids(weights["params"]) == expected_weights
    assert id(mast_model.backbone.bn1.weight) in _ids(flat["params"])
    assert id(mast_model.expander[0].bias) in _ids(flat["params"])
    assert id(mast_model.expander[-1].weight) in _ids(weights["params"])
    # every trainable parameter in exactly one group
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == sum(1 for _ in mast_model.parameters())
    assert (weights["weight_decay"], weights["lars"], weights["lr"], weights["base_lr"]) == (
        1e-6,
        True,
        0.3,
        0.3,
    )
    assert (flat["weight_decay"], flat["lars"], flat["lr"], flat["base_lr"]) == (
        0.0,
        False,
        0.3,
        0.3,
    )
    assert (extra["weight_decay"], extra["lars"], extra["lr"], extra["base_lr"]) == (
        0.0,
        False,
        0.05,
        0.05,
    )


def test_param_groups_skip_frozen_and_empty_groups():
    model = PretrainModel("resnet18", base_width=4, expander="8", num_ops=2, masks="fixed")
    model.backbone.conv1.weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.0, lr=1.0, mask_lr=2.0)
    assert len(groups) == 2  # fixed masks and no uncertainty head: no third group
    ids = [id(p) for g in groups for p in g["params"]]
    assert id(model.backbone.conv1.weight) not in ids
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_build_optimizer_kinds(name):
    model = tiny()
    opt = build_optimizer(model, name, lr=0.4, weight_decay=1e-3, mask_lr=0.02, momentum=0.8)
    kind = {"lars": LARS, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    assert type(opt) is kind
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.4, 0.02]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0, 0.0]
    if name == "lars":
        assert [g["lars"] for g in opt.param_groups] == [True, False, False]
        assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    else:
        assert all("lars" not in g for g in opt.param_groups)
    if name == "sgd":
        assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, 0.005]
    set_lr(opt, 1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.4, 0.02]
    model(torch.randn(8, 5, dtype=torch.float64)).backward()
    before = model.body[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.body[0].weight)


def test_build_optimizer_unknown_name():
    with pytest.raises(ValueError, match="adam'"):
        build_optimizer(tiny(), "adam", lr=0.1, weight_decay=0.0, mask_lr=0.1)


# -----------------------------------------------------------------------------------------------
# schedule
def test_lr_factor_warmup_and_cosine():
    total, warmup = 100, 10
    assert lr_factor(0, total, warmup) == 0.0
    assert lr_factor(5, total, warmup) == pytest.approx(0.5)
    assert lr_factor(2, total, warmup) == pytest.approx(0.2)
    assert lr_factor(warmup, total, warmup) == pytest.approx(1.0)
    assert lr_factor(55, total, warmup) == pytest.approx(0.5 + 0.001 * 0.5)  # cosine midpoint
    assert lr_factor(total, total, warmup) == pytest.approx(0.001)
    assert 0.001 < lr_factor(total - 1, total, warmup) < 0.0015
    assert lr_factor(total + 50, total, warmup) == pytest.approx(0.001)  # stays at the end value
    # official formula at an arbitrary step
    q = 0.5 * (1 + math.cos(math.pi * (37 - warmup) / (total - warmup)))
    assert lr_factor(37, total, warmup) == pytest.approx(q + 0.001 * (1 - q))
    after = [lr_factor(s, total, warmup) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    during = [lr_factor(s, total, warmup) for s in range(warmup + 1)]
    assert all(a < b for a, b in zip(during, during[1:]))
    assert lr_factor(0, total, 0) == pytest.approx(1.0)  # no warm-up
    assert lr_factor(total, total, 0, end_factor=0.1) == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------- state
# round trip
@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_optimizer_state_round_trips_weights_only(name):
    model = tiny()
    opt = build_optimizer(model, name, lr=0.3, weight_decay=1e-2, mask_lr=0.03)
    gen = torch.Generator().manual_seed(0)
    for factor in (0.5, 1.0):
        set_lr(opt, factor)
        opt.zero_grad()
        model(torch.randn(8, 5, generator=gen, dtype=torch.float64)).backward()
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    clone = copy.deepcopy(model)
    opt2 = build_optimizer(clone, name, lr=9.0, weight_decay=1e-2, mask_lr=9.0)
    opt2.load_state_dict(loaded)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert [g["base_lr"] for g in opt2.param_groups] == [0.3, 0.3, 0.03]
    if name == "lars":
        assert [g["lars"] for g in opt2.param_groups] == [True, False, False]
        assert len(opt2.state) == len(opt.state) > 0
    # the restored optimiser continues exactly as the original
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).backward()
        o.step()
    for (name_, p), (_, q) in zip(model.named_parameters(), clone.named_parameters()):
        assert torch.equal(p, q), name_
