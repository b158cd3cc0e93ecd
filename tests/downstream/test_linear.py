import torch
import torch.nn.functional as F

from downstream.classification.linear import accuracy, fit_logistic, linear_probe, standardise


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
    noise = [(torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(3, (n,), generator=g))
             for n in (400, 100, 600)]
    assert linear_probe(*noise, classes=3).accuracy < 0.45


def test_standardise_uses_train_statistics():
    a = torch.tensor([[0.0], [2.0]])
    b = torch.tensor([[4.0]])
    sa, sb = standardise(a, b)
    assert torch.allclose(sa.mean(0), torch.zeros(1)) and abs(sb.item() - 3 / 2 ** 0.5) < 1e-6
    assert accuracy(torch.tensor([[1.0, -1.0], [0.0, 0.0]]), torch.tensor([[1.0], [-1.0]]), torch.tensor([0, 1])) == 1.0
