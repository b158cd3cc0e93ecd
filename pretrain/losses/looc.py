"""Leave-one-out contrastive learning, LooC (Xiao, Wang, Efros, Darrell, ICLR 2021).

The views (``views.mode=looc``): a query q, a key k_0 that resamples every op, and for each of the n
non-base ops a key k_i that keeps the query's parameters of op i and resamples every other. One
backbone feeds n + 1 projection heads: the all-invariant space Z_0 (the model's expander) and one
space Z_i per op (the heads here). In Z_0 every key of the query's image is a positive; in Z_i only
k_i is, and the image's other keys are negatives with the other images' keys, so Z_i keeps what op
i changes and drops the rest. Each positive p of a query gets its own InfoNCE term against the
space's negatives N (embeddings l2-normalised, temperature tau):

  L_s = mean over (q, p) of  -log exp(q.p / tau) / (exp(q.p / tau) + sum_{m in N} exp(q.m / tau))
  L = sum_s L_s

The paper draws negatives from MoCo's queue of a momentum encoder; here they are the batch's keys
gathered across processes (gradients kept), SimCLR's way, so the comparison with the suite's other
methods is at equal batch and steps. Transfer reads the backbone (LooC's "LooC" row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import gather_with_grad, rank
from core.model import build_expander

#: Defaults of ``loss.options``: MoCo v2's temperature, which LooC trains with.
OPTIONS = {"temperature": 0.2}


class LooCHeads(nn.Module):
    """One projection head per op space, each of the expander's shape."""

    def __init__(self, feature_dim: int, expander: str, num_spaces: int):
        super().__init__()
        self.spaces = nn.ModuleList(
            build_expander(feature_dim, expander) for _ in range(num_spaces)
        )

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """-> ``spaces`` [S, V, B, d]: every view in every space, Z_0 (``z``, [V, B, d]) first."""
        per_space = [torch.stack([head(f) for f in features]) for head in self.spaces]
        return {"spaces": torch.stack([z, *per_space])}


class LooCLoss(nn.Module):
    def __init__(self, temperature: float = 0.2, spaces: list[str] | None = None):
        """``spaces``: the ops of Z_1..Z_n, names of their logged terms (default: their indices)."""
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"LooC's temperature must be positive, got {temperature}")
        self.temperature, self.spaces = temperature, spaces

    def space_loss(
        self, queries: torch.Tensor, keys: torch.Tensor, positive: int | None
    ) -> torch.Tensor:
        """L_s for one space: this process's ``queries`` [n, d] against every process's ``keys``
        [V - 1, N, d]; ``positive``: the key index (0-based among the keys) that is the only
        positive, or None for the all-invariant space (every key a positive)."""
        queries = F.normalize(queries, dim=1)
        num_keys, total = keys.shape[:2]
        n = queries.shape[0]
        logits = queries @ F.normalize(keys, dim=2).flatten(0, 1).T / self.temperature
        own = rank() * n + torch.arange(n, device=queries.device)  # each query's image
        blocks = range(num_keys) if positive is None else [positive]
        columns = torch.stack([own + block * total for block in blocks], 1)  # [n, P]
        is_positive = torch.zeros_like(logits, dtype=torch.bool)
        is_positive.scatter_(1, columns, True)
        negatives = torch.logsumexp(logits.masked_fill(is_positive, float("-inf")), dim=1)
        positives = logits.gather(1, columns)  # [n, P]
        return (torch.logaddexp(positives, negatives[:, None]) - positives).mean()

    def forward(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        predictions: dict[str, torch.Tensor],
        params: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``predictions``: what ``LooCHeads`` returned; ``z_a``, ``z_b`` (the query and k_0 in
        Z_0) are in it too."""
        spaces = predictions["spaces"]
        spaces = spaces.to(torch.promote_types(spaces.dtype, torch.float32))
        names = self.spaces or [str(i) for i in range(1, spaces.shape[0])]
        if len(names) != spaces.shape[0] - 1:
            raise ValueError(f"LooC has {len(names)} op spaces, the heads gave {len(spaces) - 1}")
        # every space's keys in one gather over processes (batch first): [S, V - 1, N, d]
        keys = gather_with_grad(spaces[:, 1:].permute(2, 0, 1, 3)).permute(1, 2, 0, 3)
        terms = {"looc_all": self.space_loss(spaces[0, 0], keys[0], None)}
        for i, name in enumerate(names, 1):  # op i's key is key i (key 0 resamples every op)
            terms[f"looc_{name}"] = self.space_loss(spaces[i, 0], keys[i], i)
        total = torch.stack(list(terms.values())).sum()
        return total, {k: v.detach() for k, v in terms.items()}


def op_spaces(cfg, ops: list[str]) -> list[str]:
    """The ops with a space of their own: the non-base ops, in the views' order (keys k_1..k_n)."""
    if cfg.views.mode != "looc":
        raise ValueError("LooC trains on its own views: set views.mode=looc")
    return [op for op in ops if op not in cfg.views.base]


def heads(cfg, feature_dim: int, embed_dim: int, ops: list[str]) -> LooCHeads:
    """One head per non-base op."""
    return LooCHeads(feature_dim, cfg.model.expander, len(op_spaces(cfg, ops)))


def build(cfg, ops: list[str] | None = None) -> LooCLoss:
    """The method table's constructor (``core/methods.py``)."""
    return LooCLoss(**cfg.loss.options, spaces=op_spaces(cfg, ops or []))
