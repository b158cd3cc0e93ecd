"""`make real` (scripts/run_real.sh) and its raw-pixel reference on tiny Fashion-MNIST IDX files in
the data set's own layout."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from core.config import DataConfig
from core.records import read_records
from downstream.classification.config import ClassificationConfig
from downstream.classification.evaluate import Evaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """Ten classes told apart by which band of rows is bright (plus noise): 200 train, 100 test."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for part, n in (("train", 200), ("t10k", 100)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7] += 180
        (root / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


def test_raw_pixels_are_a_reference_under_the_frozen_protocols(fmnist, tmp_path):
    cfg = ClassificationConfig(
        data=DataConfig(dataset="fashion_mnist", root=str(fmnist), image_size=28, num_workers=0),
        protocols=["linear-lbfgs", "knn", "linear-sgd"],
        val_fraction=0.1,
        cache=str(tmp_path / "cache"),
    )
    evaluator = Evaluator(cfg, tmp_path / "real.jsonl")
    assert evaluator.pixels() == 2  # linear-sgd trains weights: pixels have none
    table = read_records(tmp_path / "real.jsonl")
    assert sorted(table["protocol"]) == ["knn", "linear-lbfgs"]
    assert set(table["method"]) == {"pixels"} and set(table["arch"]) == {"pixels"}
    assert table["pretrain_ckpt"].isna().all() and (table["value"] > 90).all()  # bands: separable
    assert Evaluator(cfg, tmp_path / "real.jsonl").pixels() == 0  # recorded: not again


def test_make_real_on_tiny_files_records_every_row(fmnist, tmp_path):
    env = {
        **os.environ,
        "PY": sys.executable,
        "RESULTS": str(tmp_path / "results"),
        "FMNIST": str(fmnist),
        "SEEDS": "0",
        "PRETRAIN_SET": "train.epochs=1 train.batch_size=32 model.base_width=4 "
        "model.expander=32-32",
        "CLS_SET": "ceiling.epochs=1 data.num_workers=0",
        "MAST_DATA_CACHE": str(tmp_path / "data"),
    }
    run = subprocess.run(
        ["bash", "scripts/run_real.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    table = read_records(tmp_path / "results" / "records" / "real.jsonl")
    assert set(table["dataset"]) == {"fashion_mnist"}
    rows = table.groupby(["method", "protocol"]).size().to_dict()
    # two pretrained checkpoints, three random-init seeds, the supervised network, the pixels
    assert rows[("vicreg", "linear-lbfgs")] == 1 and rows[("mast_nounc", "knn")] == 1
    assert rows[("random-init", "linear-lbfgs")] == 3 and rows[("supervised", "supervised")] == 1
    assert rows[("pixels", "linear-lbfgs")] == 1 and rows[("pixels", "knn")] == 1


def test_make_real_without_the_data_says_how_to_get_it(tmp_path):
    env = {**os.environ, "FMNIST": str(tmp_path / "none"), "RESULTS": str(tmp_path)}
    run = subprocess.run(
        ["bash", "scripts/run_real.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in run.stderr
