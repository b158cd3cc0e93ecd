"""The ``linear-lbfgs`` protocol: multinomial logistic regression on frozen, standardised features.

The L2 weight is chosen on the validation split from a log-spaced grid, the model is refit on train
+ val with that weight, and the test top-1 accuracy is reported (the protocol of AugSelf's transfer
experiments). Everything is torch on CPU, deterministic for given inputs. The grid is swept from the
strongest to the weakest L2 weight, each fit starting from the previous solution (warm start): the
weakly regularised fits, which need the most iterations, start near their optimum, which cuts the
probe's time about in half.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

DEFAULT_GRID = tuple(10.0**e for e in range(-6, 1))  # L2 weights 1e-6 ... 1


@dataclasses.dataclass
class ProbeResult:
    accuracy: float
    l2: float
    val_accuracy: dict[float, float]


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every split with the train split's per-dimension mean and std."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    l2: float,
    max_iter: int = 200,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weights [D + 1, C] of softmax regression minimising mean cross-entropy + l2/2 ||W||^2 (bias
    free), starting from ``init`` (zeros when None)."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    start = (
        torch.zeros(x.shape[1], classes, dtype=x.dtype)
        if init is None
        else init.to(x.dtype).clone()
    )
    weights = start.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weights],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weights, y) + 0.5 * l2 * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


#: What a probe scores: top-1 accuracy, or the mean over classes of each class's accuracy (the
#: convention of data sets with unbalanced test classes: Pets, Flowers, Caltech-101, Aircraft).
METRICS = ("top1", "class_avg")


def accuracy(
    weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor, metric: str = "top1"
) -> float:
    logits = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1) @ weights
    right = (logits.argmax(1) == y).double()
    if metric == "top1":
        return right.mean().item()
    if metric != "class_avg":
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    present = y.unique()  # classes absent from this split have no accuracy to average
    return torch.stack([right[y == c].mean() for c in present]).mean().item()


def linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    grid: tuple[float, ...] = DEFAULT_GRID,
    max_iter: int = 200,
    dtype: torch.dtype = torch.float32,
    metric: str = "top1",
) -> ProbeResult:
    """Choose the L2 weight on ``val``, refit on train + val, return test accuracy (fractions in [0,
    1]); ``metric`` (``METRICS``) scores both the choice and the test."""
    x_train, x_val, x_test = standardise(*(split[0].to(dtype) for split in (train, val, test)))
    y_train, y_val, y_test = train[1].long(), val[1].long(), test[1].long()
    scores, solutions, previous = {}, {}, None
    for l2 in sorted(grid, reverse=True):
        previous = solutions[l2] = fit_logistic(
            x_train, y_train, classes, l2, max_iter, init=previous
        )
        scores[l2] = accuracy(previous, x_val, y_val, metric)
    best = max(grid, key=lambda l2: (scores[l2], l2))  # ties: the stronger regularisation
    x_all, x_test = standardise(torch.cat([train[0], val[0]]).to(dtype), test[0].to(dtype))
    weights = fit_logistic(
        x_all, torch.cat([y_train, y_val]), classes, best, max_iter, init=solutions[best]
    )
    return ProbeResult(accuracy(weights, x_test, y_test, metric), best, scores)
