"""The pretraining network: expander spec parsing and layout, forward shapes, learned and fixed
masks, the uncertainty head, gradients from the MAST loss (the masks actually move), and torchvision
backbone keys."""

import pytest
import torch
import torchvision
from torch import nn

from core.backbones import backbone_state_dict, build_backbone
from core.model import MaskBank, PretrainModel, UncertaintyHead, build_expander, parse_spec
from pretrain.losses import MASTLoss

SIZE = 32  # image side


def images(v=2, b=4, seed=0):
    return torch.randn(v, b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def small(**kwargs):
    torch.manual_seed(0)
    args = dict(arch="resnet18", base_width=4, expander="16-8", num_ops=3, uncertainty_hidden=8)
    args.update(kwargs)
    return PretrainModel(**args)


# -----------------------------------------------------------------------------------------------
# expander
def test_parse_spec():
    assert parse_spec("64-32-16") == [64, 32, 16]
    assert parse_spec("8") == [8]


@pytest.mark.parametrize("spec", ["", "a-b", "64-0", "64--32", "64-x", "-5"])
def test_parse_spec_rejects_bad_specs(spec):
    with pytest.raises(ValueError) as info:
        parse_spec(spec)
    assert f"'{spec}'" in str(info.value)


def test_build_expander_layout():
    expander = build_expander(10, "16-12-8")
    kinds = [type(layer) for layer in expander]
    assert kinds == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
    ]
    shapes = [
        (layer.in_features, layer.out_features)
        for layer in expander
        if isinstance(layer, nn.Linear)
    ]
    assert shapes == [(10, 16), (16, 12), (12, 8)]
    assert [layer.num_features for layer in expander if isinstance(layer, nn.BatchNorm1d)] == [
        16,
        12,
    ]
    assert expander[0].bias is not None and expander[3].bias is not None
    assert expander[-1].bias is None  # final layer without bias, as VICReg's
    assert expander(torch.randn(5, 10)).shape == (5, 8)
    single = build_expander(10, "6")
    assert len(single) == 1 and isinstance(single[0], nn.Linear) and single[0].bias is None
    assert single(torch.randn(3, 10)).shape == (3, 6)


# ------------------------------------------------------------------------------------------------
# forward
def test_forward_shapes_without_masks():
    model = small(masks="none")
    out = model(images(v=3, b=4))
    assert set(out) == {"z"}
    assert out["z"].shape == (3, 4, 8)
    assert model.embed_dim == 8
    assert model.masks is None and model.uncertainty_head is None


def test_learned_masks_start_near_half():
    model = small(expander="16-64", num_ops=6, masks="learned", uncertainty=True)
    out = model(images())
    assert out["masks"].requires_grad
    masks = out["masks"].detach()
    assert masks.shape == (6, 64)
    assert bool(((masks > 0) & (masks < 1)).all())
    assert float((masks - 0.5).abs().max()) < 0.05
    assert float(masks.std()) > 0  # noisy start breaks the symmetry between ops
    assert out["log_var"].shape == (2, 4, 6)
    assert out["z"].shape == (2, 4, 64)
    assert isinstance(model.uncertainty_head, UncertaintyHead)
    assert model.masks.logits.shape == (6, 64)


def test_fixed_masks_are_a_partition_without_parameters():
    model = small(expander="16-20", num_ops=3, masks="fixed")
    masks = model(images())["masks"]
    assert masks.shape == (3, 20)
    assert bool(((masks == 0) | (masks == 1)).all())
    assert torch.equal(masks.sum(0), torch.ones(20))  # every dimension belongs to exactly one op
    assert sorted(masks.sum(1).tolist()) == [6.0, 7.0, 7.0]  # near-equal shares
    assert not masks.requires_grad
    assert list(model.masks.parameters()) == []
    assert "masks.fixed" in model.state_dict()
    # deterministic for a seed
    assert torch.equal(MaskBank(3, 20, "fixed", seed=0)(), MaskBank(3, 20, "fixed", seed=0)())


# ------------------------------------------------------------------------------------------- MAST
# gradient
def _mast_step(model, loss_fn, x, pairs, gates):
    out = model(x)
    return loss_fn(out["z"], pairs, gates, out["masks"], out["log_var"])


def test_masks_and_uncertainty_head_learn_from_mast_loss():
    model = small(masks="learned", uncertainty=True)
    loss_fn = MASTLoss(uncertainty=True)
    x = images(b=8, seed=1)
    k = 3
    pairs = torch.tensor([[0, 1]] * k)
    gates = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]] * 4)
    total, _ = _mast_step(model, loss_fn, x, pairs, gates)
    total.backward()
    assert model.masks.logits.grad is not None and float(model.masks.logits.grad.abs().max()) > 0
    for name, p in model.uncertainty_head.named_parameters():
        if name != "net.0.bias":  # a bias before BatchNorm has no gradient
            assert p.grad is not None and float(p.grad.abs().max()) > 0, name
    assert float(model.backbone.conv1.weight.grad.abs().max()) > 0

    model.zero_grad()
    start = model.masks.logits.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        total, _ = _mast_step(model, loss_fn, x, pairs, gates)
        losses.append(total.item())
        total.backward()
        opt.step()
    assert float((model.masks.logits.detach() - start).abs().max()) > 1e-4
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_fixed_masks_get_no_gradient_but_network_trains():
    model = small(masks="fixed", uncertainty=False)
    out = model(images(b=4))
    total, _ = MASTLoss(uncertainty=False)(
        out["z"], torch.tensor([[0, 1]] * 3), torch.ones(4, 3), out["masks"]
    )
    total.backward()
    assert all(p.grad is not None for p in model.expander.parameters())
    assert not any(n.startswith("masks.") for n, _ in model.named_parameters())


def test_uncertainty_fit_sends_no_gradient_to_the_backbone():
    """The head's fit (unc_fit) moves the head alone: it reads detached features, so the
    embedding is weighted by the head but never trained to feed it."""
    model = small(masks="learned", uncertainty=True)
    out = model(images(b=8))
    _, terms = MASTLoss()(
        out["z"], torch.tensor([[0, 1]] * 3), torch.ones(8, 3), out["masks"], out["log_var"]
    )
    terms["unc_fit"].backward()
    backbone = [p.grad for p in model.backbone.parameters()]
    assert all(g is None or not g.any() for g in backbone)
    assert all(p.grad is None or not p.grad.any() for p in model.expander.parameters())
    head = [p.grad for p in model.uncertainty_head.parameters()]
    assert all(g is not None for g in head) and sum(g.abs().sum() for g in head) > 0


def test_embedding_loss_still_trains_the_backbone_with_the_head():
    model = small(masks="learned", uncertainty=True)
    out = model(images(b=8))
    total, terms = MASTLoss()(
        out["z"], torch.tensor([[0, 1]] * 3), torch.ones(8, 3), out["masks"], out["log_var"]
    )
    (total - 25.0 * terms["unc_fit"]).backward()
    assert sum(p.grad.abs().sum() for p in model.backbone.parameters() if p.grad is not None) > 0
    assert all(p.grad is None or not p.grad.any() for p in model.uncertainty_head.parameters())


@pytest.mark.parametrize("kind", ["assign", "assign_fixed"])
def test_assignment_bank_is_a_distribution_over_shared_and_ops(kind):
    model = small(masks=kind, num_ops=6, num_owned=5)
    masks = model(images(b=4))["masks"]
    assert masks.shape == (6, 8)  # shared + 5 owning ops, over d = 8
    assert torch.allclose(masks.sum(0), torch.ones(8))
    if kind == "assign_fixed":
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert not any(n.startswith("masks.") for n, _ in model.named_parameters())
    else:
        assert torch.allclose(masks, torch.full_like(masks, 1 / 6), atol=0.01)  # starts uniform


# ------------------------------------------------------------------------------------------------
# backbone
def test_backbone_keys_are_torchvision_and_width_scales():
    reference = {k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")}
    backbone = build_backbone("resnet18", base_width=8)
    assert backbone.feature_dim == 64
    assert set(backbone.state_dict()) == reference
    assert not any(k.startswith("fc.") for k in backbone.state_dict())
    assert set(backbone_state_dict(backbone)) == reference
    assert backbone.conv1.weight.shape == (8, 3, 7, 7)
    assert backbone.layer4[1].bn2.weight.shape == (64,)
    backbone.eval()
    assert backbone(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 64)
    model = small(base_width=8, expander="16-8")
    assert model.backbone.feature_dim == 64
    assert model.expander[0].in_features == 64
    keys = {k[len("backbone.") :] for k in model.state_dict() if k.startswith("backbone.")}
    assert keys == reference
