"""VICReg's variance and covariance terms, shared by every loss of the suite.

Both follow the official VICReg code: embeddings are centred per dimension; the variance term is the mean
hinge ``relu(1 - sqrt(Var + eps))`` over dimensions; the covariance term is the sum of squared off-diagonal
covariances divided by the dimension d (covariance normalised by N - 1). Callers gather embeddings across
processes first (``core.distributed.gather_with_grad``), so N is the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = mean_j relu(1 - sqrt(Var_j(Z) + eps)) for Z of shape [N, d]."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = sum_{i != j} Cov_ij(Z)^2 / d for Z of shape [N, d]."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = (centred.T @ centred) / (n - 1)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off_diagonal / d
