"""VICReg's variance and covariance terms, shared by every loss of the suite.

Both follow the official VICReg code: embeddings are centred per dimension; the variance term is the
mean hinge ``relu(1 - sqrt(Var + eps))`` over dimensions; the covariance term is the sum of squared
off-diagonal covariances divided by the dimension d (covariance normalised by N - 1). Callers gather
embeddings across processes first (``core.distributed.gather_with_grad``), so N is the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = mean_j relu(1 - sqrt(Var_j(Z) + eps)) for Z of shape [N, d]."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = sum_{i != j} Cov_ij(Z)^2 / d for Z of shape [N, d].

    With fewer samples than dimensions (VICReg's 8192-d expander at any per-GPU batch) the sum of
    squares comes from the N x N Gram matrix instead of the d x d covariance: ||X^T X||_F = ||X
    X^T||_F for the centred X, so the cost falls from N d^2 to N^2 d (~60x less at N = 128, d =
    8192). The diagonal is the per-dimension sum of squares either way."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    if n < d:
        squares = (centred @ centred.T).pow(2).sum()
        diagonal = centred.pow(2).sum(dim=0).pow(2).sum()
    else:
        product = centred.T @ centred
        squares, diagonal = product.pow(2).sum(), product.diagonal().pow(2).sum()
    return (squares - diagonal) / ((n - 1) ** 2 * d)
