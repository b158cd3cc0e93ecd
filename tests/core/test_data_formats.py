"""CIFAR pickles (read with a restricted unpickler) and Fashion-MNIST IDX files, written by the
tests."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from core.config import DataConfig
from core.data import DataError, build_dataset
from core.data.cifar import read_pickle
from core.data.idx import read_idx


def write_cifar10(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        images[name] = x
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {b"data": x.reshape(n, -1), b"labels": list(range(n)), b"batch_label": b"x"}, handle
            )
    return images


def test_cifar10_layout(tmp_path):
    images = write_cifar10(tmp_path)
    train = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), part="train")
    assert len(train) == 20 and train.label_names == {"class": 10}
    image, target = train[5]  # batch 2, row 1
    assert torch.equal(image, torch.from_numpy(images["data_batch_2"][1])) and target == {
        "class": 1
    }
    test = build_dataset(
        DataConfig(dataset="cifar10", root=str(tmp_path / "cifar-10-batches-py")), part="test"
    )
    assert len(test) == 4
    with pytest.raises(DataError, match="unknown cifar10 part 'val'"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), part="val")


def test_cifar100_has_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = np.zeros((3, 3072), np.uint8)
    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {b"data": x, b"fine_labels": [0, 99, 5], b"coarse_labels": [1, 19, 2]}, handle
            )
    data = build_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)), part="train")
    assert data.label_names == {"class": 100, "coarse": 20} and data[1][1] == {
        "class": 99,
        "coarse": 19,
    }


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as handle:
        pickle.dump({b"data": Evil()}, handle)
    with pytest.raises(DataError, match="posix.system is not allowed"):
        read_pickle(path)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def test_fashion_mnist_idx(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 9, 3, 3, 1])))
    data = build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)), part="train")
    image, target = data[1]
    assert (
        image.shape == (3, 28, 28)
        and torch.equal(image[2], torch.from_numpy(images[1]))
        and target == {"class": 9}
    )
    assert data.label_names == {"class": 10}
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[.gz\] not found"):
        build_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)), part="test")
    (tmp_path / "bad").write_bytes(idx_bytes(images)[:-10])
    with pytest.raises(DataError, match="header says"):
        read_idx(tmp_path / "bad")
