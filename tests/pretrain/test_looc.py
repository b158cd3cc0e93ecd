"""LooC: its loss against a transcription of the paper's definition (one InfoNCE term per positive
key, value and gradients, float64) and against in-batch InfoNCE where the two coincide; its views;
its config, heads and logged terms."""

import math

import pytest
import torch
import torch.nn.functional as F

from core.augment import OPS, PARAM_SLICES, AugmentConfig
from core.config import load_config
from core.views import ViewMaker, ViewsConfig
from pretrain.config import PretrainConfig
from pretrain.losses.looc import LooCHeads, LooCLoss
from pretrain.train import build_loss, build_model

SMALL = ["model.arch=resnet18", "model.base_width=4", "model.expander=32-32"]


def transcription(spaces: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's loss written out query by query: in space 0 every key of the query's image is
    a positive, in space i only key i; every other key of the batch is a negative; each positive
    has its own softmax against the negatives; the mean over (query, positive) per space, summed
    over the spaces."""
    num_spaces, num_views, n, _ = spaces.shape
    total = spaces.new_zeros(())
    for s in range(num_spaces):
        e = F.normalize(spaces[s], dim=-1)
        terms = []
        for b in range(n):
            q = e[0, b]
            positives = list(range(1, num_views)) if s == 0 else [1 + s]
            negatives = [
                (v, c)
                for v in range(1, num_views)
                for c in range(n)
                if not (c == b and v in positives)
            ]
            negative_sum = sum(torch.exp(q @ e[v, c] / temperature) for v, c in negatives)
            for v in positives:
                positive = torch.exp(q @ e[v, b] / temperature)
                terms.append(-torch.log(positive / (positive + negative_sum)))
        total = total + torch.stack(terms).mean()
    return total


@pytest.mark.parametrize(("spaces", "n", "d", "temperature"), [(3, 5, 8, 0.2), (6, 4, 16, 0.5)])
def test_loss_matches_the_transcription_value_and_gradients(spaces, n, d, temperature):
    torch.manual_seed(spaces)
    shared = torch.randn(1, 1, n, d, dtype=torch.float64)
    # views of an image near each other, so positives and negatives are told apart
    embeddings = shared + 0.7 * torch.randn(spaces, spaces + 1, n, d, dtype=torch.float64)
    embeddings.requires_grad_(True)
    loss = LooCLoss(temperature, spaces=[f"op{i}" for i in range(1, spaces)])
    ours, terms = loss(embeddings[0, 0], embeddings[0, 1], {"spaces": embeddings})
    theirs = transcription(embeddings, temperature)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    assert set(terms) == {"looc_all", *(f"looc_op{i}" for i in range(1, spaces))}
    assert sum(terms.values()).item() == pytest.approx(ours.item(), rel=1e-10)
    (g_ours,) = torch.autograd.grad(ours, embeddings)
    (g_theirs,) = torch.autograd.grad(theirs, embeddings)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-8, atol=1e-12)


def test_one_space_of_two_views_is_in_batch_infonce():
    # the query against the batch's keys, the own key the target: cross-entropy over q k^T / tau
    torch.manual_seed(0)
    q, k = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    ours, _ = LooCLoss(0.1)(q, k, {"spaces": torch.stack([q, k])[None]})
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1
    assert ours.item() == pytest.approx(F.cross_entropy(logits, torch.arange(8)).item(), rel=1e-12)


def test_an_op_space_keeps_what_the_op_changes():
    # in op 1's space the query sits on key 1 and is orthogonal to every other key: the positive at
    # similarity 1, every negative (keys 0 and 2 of the image included) at 0
    n, t = 3, 0.2
    basis = torch.eye(12, dtype=torch.float64)
    space = torch.stack([basis[:n], basis[n : 2 * n], basis[:n], basis[2 * n : 3 * n]])
    ours = LooCLoss(t).space_loss(space[0], space[1:], 1)  # key 1: k_1 (view 2)
    negatives = 3 * n - 1
    assert ours.item() == pytest.approx(math.log(1 + negatives * math.exp(-1 / t)), rel=1e-6)
    # the same embeddings in the all-invariant space: keys 0 and 2 are positives there, at 0
    assert LooCLoss(t).space_loss(space[0], space[1:], None).item() > ours.item() + 1
    with pytest.raises(ValueError, match="temperature must be positive"):
        LooCLoss(0.0)


def test_looc_views_keep_one_op_of_the_query_per_key():
    cfg = AugmentConfig()
    maker = ViewMaker(cfg, ViewsConfig(mode="looc"), 16)
    others = [op for op in OPS if op != "crop"]
    assert maker.num_views == len(others) + 2 and maker.pairs().tolist() == [[0, 1]] * len(OPS)
    changed = {op: 0 for op in OPS}
    for seed in range(40):
        p = maker.sample(torch.Generator().manual_seed(seed), 24, 24)
        assert p.shape[0] == maker.num_views
        for i, op in enumerate(others, 2):
            assert torch.equal(p[i, PARAM_SLICES[op]], p[0, PARAM_SLICES[op]]), (seed, op)
        for op in OPS:  # the other keys resample it (crop: every key)
            keys = [1, *(i for i, other in enumerate(others, 2) if other != op)]
            changed[op] += any(
                not torch.equal(p[k, PARAM_SLICES[op]], p[0, PARAM_SLICES[op]]) for k in keys
            )
    assert changed["crop"] == 40 and all(changed[op] >= 10 for op in OPS), changed


def test_config_needs_looc_views_and_builds_a_head_per_op():
    with pytest.raises(ValueError, match="views.mode=looc"):
        build_model(load_config(PretrainConfig, None, [*SMALL, "method=looc"]), 6, list(OPS))
    cfg = load_config(PretrainConfig, None, [*SMALL, "method=looc", "views.mode=looc"])
    assert cfg.loss.options == {"temperature": 0.2} and not cfg.uses_masks
    model = build_model(cfg, 6, list(OPS))
    assert isinstance(model.heads, LooCHeads) and len(model.heads.spaces) == 5
    loss = build_loss(cfg, list(OPS))
    assert loss.spaces == [op for op in OPS if op != "crop"]
    out = model(torch.rand(7, 4, 3, 32, 32))
    assert out["heads"]["spaces"].shape == (6, 7, 4, 32)
    assert torch.equal(out["heads"]["spaces"][0], out["z"])
    total, terms = loss(*out["z"][:2], predictions=out["heads"])
    assert set(terms) == {"looc_all", *(f"looc_{op}" for op in loss.spaces)}
    assert math.isfinite(total.item())
