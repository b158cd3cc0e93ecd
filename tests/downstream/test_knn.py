import torch

from downstream.classification.knn import knn_accuracy, knn_predict


def test_hand_made_neighbours():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    train_y = torch.tensor([0, 0, 1, 1, 1])
    test_x = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(train_x, train_y, test_x, classes=2, k=2).tolist() == [0, 1]
    # With k = 5 every training sample votes; near-identical directions dominate through exp(sim / T).
    assert knn_predict(train_x, train_y, test_x, classes=2, k=5, temperature=0.07).tolist() == [0, 1]
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
