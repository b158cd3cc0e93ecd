"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021).

C = BN(z_a)^T BN(z_b) / N is the cross-correlation of the two views' embeddings, each dimension
standardised over the batch (batch norm without affine parameters, biased variance), and
L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.
The batch is the one gathered across processes (gradients kept): the official code sums C over
processes with synchronised batch norm, which is the same matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import gather_with_grad

#: Defaults of ``loss.options``: the paper's lambda (5e-3, with an 8192-d projector).
OPTIONS = {"lambd": 5e-3}


class BarlowTwinsLoss(nn.Module):
    def __init__(self, lambd: float = 5e-3, eps: float = 1e-5):
        """``lambd``: weight of the redundancy-reduction (off-diagonal) term; ``eps``: the batch
        norm's (PyTorch's BatchNorm1d default, as in the official code)."""
        super().__init__()
        self.lambd, self.eps = lambd, eps

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(z, None, None, training=True, eps=self.eps)

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
        c = self._standardise(z_a).T @ self._standardise(z_b) / z_a.shape[0]
        diagonal = torch.diagonal(c)
        on_diag = (1 - diagonal).pow(2).sum()
        off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
        total = on_diag + self.lambd * off_diag
        return total, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}


def build(cfg, ops: list[str] | None = None) -> BarlowTwinsLoss:
    """The method table's constructor (``core/methods.py``): Barlow Twins with ``loss.options``."""
    return BarlowTwinsLoss(**cfg.loss.options)
