import math

import torch

from downstream.classification.knn import knn_accuracy, knn_predict


def test_hand_made_neighbours():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    train_y = torch.tensor([0, 0, 1, 1, 1])
    test_x = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(train_x, train_y, test_x, classes=2, k=2).tolist() == [0, 1]
    # With k = 5 every training sample votes; near-identical directions dominate through exp(sim /
    # T).
    assert knn_predict(train_x, train_y, test_x, classes=2, k=5, temperature=0.07).tolist() == [
        0,
        1,
    ]
    # A very high temperature flattens the weights: plain majority (3 of 5 are class 1) wins.
    assert knn_predict(train_x, train_y, test_x, classes=2, k=5, temperature=1e6).tolist() == [1, 1]


def test_scale_invariance_and_chunks():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.randint(4, (300,), generator=g)
    x = centres[y] + torch.randn(300, 16, generator=g)
    acc = knn_accuracy((x[:200], y[:200]), (x[200:], y[200:]), classes=4)
    assert acc > 0.9
    scaled = knn_predict(x[:200] * 5, y[:200], x[200:] * 0.1, 4, chunk=7)
    assert torch.equal(scaled, knn_predict(x[:200], y[:200], x[200:], 4))
    noise = torch.randn(300, 16, generator=g)
    assert knn_accuracy((noise[:200], y[:200]), (noise[200:], y[200:]), classes=4) < 0.45


def brute_force_knn(train_x, train_y, test_x, classes, k, temperature):
    """The protocol written out sample by sample: cosine similarity to every training sample, the k
    most similar vote with weight exp(similarity / T), the heaviest class wins."""
    predictions = []
    for query in test_x:
        sims = [float(query @ t / (query.norm() * t.norm())) for t in train_x]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * classes
        for i in order:
            votes[int(train_y[i])] += math.exp(sims[i] / temperature)
        predictions.append(max(range(classes), key=lambda c: votes[c]))
    return predictions


def test_matches_brute_force_reference():
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(5, 12, generator=g)
    train_y = torch.randint(5, (150,), generator=g)
    train_x = centres[train_y] + 1.5 * torch.randn(150, 12, generator=g)
    test_x = centres[torch.randint(5, (60,), generator=g)] + 1.5 * torch.randn(60, 12, generator=g)
    for k, temperature in ((20, 0.07), (7, 0.5), (200, 0.1)):
        expected = brute_force_knn(
            train_x.double(), train_y, test_x.double(), 5, min(k, 150), temperature
        )
        assert (
            knn_predict(train_x, train_y, test_x, 5, k, temperature, chunk=16).tolist() == expected
        )
