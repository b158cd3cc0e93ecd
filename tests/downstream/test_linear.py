import pytest
import torch
import torch.nn.functional as F

from downstream.classification.linear import (
    DEFAULT_GRID,
    accuracy,
    fit_logistic,
    linear_probe,
    standardise,
)


def blobs(n: int, classes: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64) * 3
    y = torch.randint(classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64), y


def test_fit_reaches_the_optimum():
    x, y = blobs(300, 4, 6, 2.0, 0)
    w = fit_logistic(x, y, 4, l2=1e-2).requires_grad_(True)
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    objective = F.cross_entropy(xb @ w, y) + 0.5 * 1e-2 * w[:-1].pow(2).sum()
    (grad,) = torch.autograd.grad(objective, w)
    assert grad.abs().max() < 1e-5  # stationary point of a strictly convex objective = the optimum


def test_probe_separates_easy_classes_and_fails_on_noise():
    train, val, test = blobs(400, 3, 5, 0.5, 1), blobs(100, 3, 5, 0.5, 1), blobs(200, 3, 5, 0.5, 1)
    # Same seed -> same centres; the splits differ in size so their samples differ.
    result = linear_probe(train, val, test, classes=3)
    assert result.accuracy > 0.95 and set(result.val_accuracy) and result.l2 in result.val_accuracy
    g = torch.Generator().manual_seed(3)
    noise = [
        (torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(3, (n,), generator=g))
        for n in (400, 100, 600)
    ]
    assert linear_probe(*noise, classes=3).accuracy < 0.45


def test_standardise_uses_train_statistics():
    a = torch.tensor([[0.0], [2.0]])
    b = torch.tensor([[4.0]])
    sa, sb = standardise(a, b)
    assert torch.allclose(sa.mean(0), torch.zeros(1)) and abs(sb.item() - 3 / 2**0.5) < 1e-6
    assert (
        accuracy(
            torch.tensor([[1.0, -1.0], [0.0, 0.0]]),
            torch.tensor([[1.0], [-1.0]]),
            torch.tensor([0, 1]),
        )
        == 1.0
    )


def test_matches_scikit_learn_logistic_regression():
    """Same selection procedure with scikit-learn's LogisticRegression (L-BFGS) as the reference:
    our mean cross-entropy + l2/2 ||W||^2 is sklearn's C * sum + 1/2 ||W||^2 with C = 1 / (n *
    l2)."""
    from sklearn.linear_model import LogisticRegression

    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(6, 20, generator=torch.Generator().manual_seed(42)) * 0.6
        y = torch.randint(6, (n,), generator=g)
        return centres[y] + torch.randn(n, 20, generator=g), y

    train, val, test = make(600, 1), make(300, 2), make(600, 3)
    ours = linear_probe(train, val, test, classes=6)

    x_train, x_val, x_test = (
        t.numpy() for t in standardise(train[0].double(), val[0].double(), test[0].double())
    )
    scores = {}
    for l2 in DEFAULT_GRID:
        model = LogisticRegression(C=1 / (len(x_train) * l2), max_iter=1000, tol=1e-8)
        scores[l2] = model.fit(x_train, train[1].numpy()).score(x_val, val[1].numpy())
    best = max(DEFAULT_GRID, key=lambda l2: (scores[l2], l2))
    x_all, x_test = (
        t.numpy() for t in standardise(torch.cat([train[0], val[0]]).double(), test[0].double())
    )
    y_all = torch.cat([train[1], val[1]]).numpy()
    reference = LogisticRegression(C=1 / (len(x_all) * best), max_iter=1000, tol=1e-8).fit(
        x_all, y_all
    )
    expected = reference.score(x_test, test[1].numpy())
    assert 0.3 < expected < 0.95  # a task where the regularisation matters, not a trivial one
    assert abs(ours.accuracy - expected) <= 0.01, (ours.accuracy, expected, ours.l2, best)
    for l2 in DEFAULT_GRID:
        assert abs(ours.val_accuracy[l2] - scores[l2]) <= 0.01, (
            l2,
            ours.val_accuracy[l2],
            scores[l2],
        )


def test_class_average_weights_every_class_alike():
    from downstream.classification.linear import accuracy

    # identity weights on one-hot features: predictions are the features' classes
    weights = torch.cat([torch.eye(3), torch.zeros(1, 3)])
    x = torch.eye(3)[[0, 0, 0, 0, 1, 2]]
    y = torch.tensor([0, 0, 0, 0, 2, 2])  # class 0: 4/4 right; class 2: 1/2 right
    assert accuracy(weights, x, y) == pytest.approx(5 / 6)
    assert accuracy(weights, x, y, "class_avg") == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        accuracy(weights, x, y, "top5")


def test_log_spaced_l2_grid_and_its_errors():
    from core.config import ConfigError
    from downstream.classification.config import LbfgsConfig

    assert LbfgsConfig(l2_logspace=[-2, 1, 4]).l2_grid == pytest.approx([0.01, 0.1, 1.0, 10.0])
    for bad in ([1, -2, 4], [-2, 1, 0], [-2, 1]):
        with pytest.raises(ConfigError, match="must be \\[first, last, count\\]"):
            LbfgsConfig(l2_logspace=bad)
