"""VICReg (Bardes, Ponce, LeCun, ICLR 2022), scaled as in the official code.

L = lam * MSE(z_a, z_b) + mu * [v(Z_a) + v(Z_b)] / 2 + nu * [c(Z_a) + c(Z_b)]
with v and c from ``terms.py``. The invariance term uses this process's batch; v and c use the batch
gathered across processes (gradients kept), exactly as the official implementation does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import gather_with_grad
from pretrain.losses.terms import covariance_term, variance_term


class VICRegLoss(nn.Module):
    def __init__(self, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0, eps: float = 1e-4):
        """``lam``, ``mu``, ``nu``: weights of the invariance, variance and covariance terms
        (method.md)."""
        super().__init__()
        self.lam, self.mu, self.nu, self.eps = lam, mu, nu, eps

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        invariance = F.mse_loss(z_a, z_b)
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        variance = (variance_term(z_a, self.eps) + variance_term(z_b, self.eps)) / 2
        covariance = covariance_term(z_a) + covariance_term(z_b)
        total = self.lam * invariance + self.mu * variance + self.nu * covariance
        return total, {"inv": invariance, "var": variance, "cov": covariance}


def build(cfg, ops: list[str] | None = None) -> VICRegLoss:
    """The method table's constructor (``core/methods.py``): VICReg's loss from ``cfg.loss``."""
    return VICRegLoss(cfg.loss.lam, cfg.loss.mu, cfg.loss.nu)
