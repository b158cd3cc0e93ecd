"""The ``knn`` protocol: weighted k-nearest neighbours on L2-normalised frozen features.

Each test sample votes with its k most cosine-similar training samples, each vote weighted by
exp(similarity / T) (k = 20, T = 0.07 by default; k = 200, T = 0.1 to compare with lightly's
numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted class of every test sample."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(k, len(train_x))
    predictions = []
    for start in range(0, len(test_x), chunk):
        sims, idx = (test_x[start : start + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), classes)
        votes.scatter_add_(1, train_y[idx], (sims / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_accuracy(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (a fraction) of ``knn_predict`` on ``test``."""
    predicted = knn_predict(train[0], train[1].long(), test[0], classes, k, temperature)
    return (predicted == test[1].long()).double().mean().item()
