"""BYOL (Grill et al., NeurIPS 2020).

The online network (backbone, projector = the model's expander, predictor q) predicts the target
network's projection of the other view; the target is an exponential moving average of the online
backbone and projector (``core.model.PretrainModel.update_target``) and gets no gradient:

  L = ||q(z_a)/|q(z_a)| - z'_b/|z'_b| ||^2 + ||q(z_b)/|q(z_b)| - z'_a/|z'_a| ||^2
    = 4 - 2 cos(q(z_a), z'_b) - 2 cos(q(z_b), z'_a)          (mean over the batch)

with the target's momentum tau_k = 1 - (1 - tau) (cos(pi k / K) + 1) / 2 at step k of K, rising from
``tau`` to 1. The predictor is BYOL's MLP: Linear, BatchNorm, ReLU, Linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Defaults of ``loss.options``: the base momentum tau (0.996 at ImageNet scale) and the predictor's
#: hidden width (4096 in the paper).
OPTIONS = {"tau": 0.996, "predictor_hidden": 4096}


def regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The normalised squared error 2 - 2 cos(p, z), per sample."""
    return 2 - 2 * F.cosine_similarity(p, z, dim=-1)


class BYOLPredictor(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Online projections ``z`` [2, B, d] -> predictions [2, B, d] (each view on its own, so
        the batch-norm statistics are per view, as the views' are)."""
        return torch.stack([self.net(view) for view in z])


class BYOLLoss(nn.Module):
    def forward(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        params: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``predictions`` [2, B, d]: q of each view's online projection; ``targets`` [2, B, d]: the
        target network's projections (no gradient)."""
        p = predictions.to(torch.promote_types(predictions.dtype, torch.float32))
        t = targets.detach().to(p.dtype)
        loss = regression(p[0], t[1]).mean() + regression(p[1], t[0]).mean()
        with torch.no_grad():
            cosine = F.cosine_similarity(z_a, z_b, dim=-1).mean()
        return loss, {"byol": loss.detach(), "online_cos": cosine}


def momentum(cfg, step: int, total_steps: int) -> float:
    """tau_k at step k (0-based) of K: from ``loss.options.tau`` up to 1, on BYOL's cosine."""
    tau = float(cfg.loss.options["tau"])
    return 1 - (1 - tau) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


def heads(cfg, feature_dim: int, embed_dim: int, ops: list[str]) -> BYOLPredictor:
    """The online predictor."""
    if cfg.views.mode != "pair":
        raise ValueError("BYOL compares two views: it needs views.mode=pair")
    return BYOLPredictor(embed_dim, int(cfg.loss.options["predictor_hidden"]))


def build(cfg, ops: list[str] | None = None) -> BYOLLoss:
    """The method table's constructor (``core/methods.py``)."""
    if not 0 <= float(cfg.loss.options["tau"]) <= 1:
        raise ValueError(f"loss.options.tau must be in [0, 1], got {cfg.loss.options['tau']}")
    return BYOLLoss()
