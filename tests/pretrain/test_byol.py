"""BYOL against lightly (the test-only oracle): the loss (NegativeCosineSimilarity), the momentum
schedule (cosine_schedule) and the target update (update_momentum); the target network in the model
and the trainer: a copy at the start, never seen by the optimiser, moved by the moving average."""

import copy

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule

from core.config import load_config
from core.model import PretrainModel
from pretrain.config import PretrainConfig
from pretrain.losses.byol import BYOLLoss, BYOLPredictor, momentum
from pretrain.optim import param_groups
from pretrain.train import Trainer, build_loss, build_model
from tests.pretrain.test_augself import SMALL
from tests.pretrain.test_train import TINY


def test_loss_matches_lightly_value_and_gradients():
    torch.manual_seed(0)
    p = torch.randn(2, 16, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 16, 8, dtype=torch.float64, requires_grad=True)
    ours, terms = BYOLLoss()(t[0], t[1], predictions=p, targets=t)
    negcos = NegativeCosineSimilarity()
    # 2 - 2 cos per direction, both directions
    theirs = 4 + 2 * (negcos(p[0], t[1].detach()) + negcos(p[1], t[0].detach()))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    assert terms["byol"].item() == pytest.approx(ours.item())
    (g_ours,) = torch.autograd.grad(ours, p)
    (g_theirs,) = torch.autograd.grad(theirs, p)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-10, atol=1e-14)
    # the target gets no gradient
    assert torch.autograd.grad(BYOLLoss()(t[0], t[1], p, t)[0], t, allow_unused=True)[0] is None
    # identical directions: the loss is 0
    same, _ = BYOLLoss()(t[0], t[1], predictions=3 * t.detach().flip(0), targets=t)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_momentum_follows_byols_cosine():
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=byol", "loss.options.tau=0.99"])
    total = 50
    ours = [momentum(cfg, k, total) for k in range(total + 1)]
    # lightly's schedule reaches its end value at max_steps - 1; BYOL's formula at K
    theirs = [cosine_schedule(k, total + 1, 0.99, 1.0) for k in range(total + 1)]
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert ours[0] == pytest.approx(0.99) and ours[-1] == pytest.approx(1.0)


def test_target_update_matches_lightly():
    torch.manual_seed(0)
    model = PretrainModel("resnet18", 4, "16-16", ema_target=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            model.backbone.state_dict().values(), model.target["backbone"].state_dict().values()
        )
    )
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
    reference = copy.deepcopy(model.target["backbone"])
    update_momentum(model.backbone, reference, m=0.9)
    model.update_target(0.9)
    for a, b in zip(reference.parameters(), model.target["backbone"].parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    assert not any(p.requires_grad for p in model.target.parameters())
    # the optimiser's groups never hold a target parameter
    target_ids = {id(p) for p in model.target.parameters()}
    grouped = {id(p) for g in param_groups(model, 1e-6, 0.1, 0.1) for p in g["params"]}
    assert grouped and not grouped & target_ids


def test_a_training_step_moves_the_target_by_the_moving_average(tmp_path, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path / "data"))
    cfg = load_config(PretrainConfig, None, [*TINY, "method=byol", "train.max_steps=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    before = copy.deepcopy(trainer.model.target["backbone"].state_dict())
    trainer.fit()
    m = momentum(cfg, 0, trainer.total_steps)
    online = trainer.model.backbone.state_dict()
    after = trainer.model.target["backbone"].state_dict()
    key = "conv1.weight"
    assert torch.allclose(after[key], m * before[key] + (1 - m) * online[key], atol=1e-7)
    assert not torch.equal(after[key], before[key])


def test_config_and_heads():
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=byol"])
    assert cfg.loss.options == {"tau": 0.996, "predictor_hidden": 4096}
    model = build_model(cfg, 6, cfg.augment.ops)
    assert isinstance(model.heads, BYOLPredictor) and model.target is not None
    bad = load_config(PretrainConfig, None, [*SMALL, "method=byol", "loss.options.tau=1.5"])
    with pytest.raises(ValueError, match="tau must be in"):
        build_loss(bad)
