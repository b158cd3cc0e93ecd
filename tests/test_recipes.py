"""The real-data recipes on tiny files in each data set's own layout: the CIFAR and STL-10
pretraining configs train (two steps, shrunk), and AugSelf's transfer configs evaluate a backbone
end to end (features at 96 px, the 45-value L2 sweep, the data set's metric)."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.checkpoints import load_checkpoint, random_backbone
from core.config import load_config
from core.records import read_records
from downstream.classification.config import ClassificationConfig
from downstream.classification.evaluate import Evaluator
from pretrain.config import PretrainConfig
from pretrain.train import Trainer
from tests.core.test_data_formats import write_cifar10
from tests.core.test_data_sources import write_stl10

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SHRINK = [
    "device=cpu",
    "data.num_workers=0",
    "model.base_width=4",
    "model.expander=16-16",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.amp=none",
    "train.log_every=1",
]


def write_cifar100(root: Path, n: int = 12) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        data = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [i % 3 for i in range(n)],
            b"coarse_labels": [i % 2 for i in range(n)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(data, handle)


def write_folder(root: Path, parts=("train", "test"), classes=3, per_class=6) -> None:
    """``root/<part>/<class>/*.png`` photos of several sizes, as the folder data sets are laid
    out."""
    rng = np.random.default_rng(2)
    for part in parts:
        for c in range(classes):
            folder = root / part / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = 60 + 10 * (i % 3), 80
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., c] = 255  # a class colour, so the probe has something to find
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    write_cifar10(root / "cifar10", n=10)  # labels 0..9, one image each per batch
    write_cifar100(root / "cifar100")
    write_stl10(root / "stl10" / "stl10_binary", n_train=10, n_test=6, n_unlabeled=8)
    write_folder(root / "folder")
    return root


PRETRAIN = sorted(CONFIGS.glob("pretrain/*_cifar10*.yaml")) + sorted(
    CONFIGS.glob("pretrain/*_stl10.yaml")
)


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.stem)
def test_pretraining_recipe_trains_on_its_layout(path, layouts, tmp_path):
    data = path.stem.rsplit("_", 1)[1]
    root = layouts / data / ("stl10_binary" if data == "stl10" else "")
    cfg = load_config(PretrainConfig, path, [*SHRINK, f"data.root={root}"])
    Trainer(cfg, tmp_path / "run").fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 2 and state["config"]["data"]["dataset"] == data


TRANSFER = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "stl10": "stl10/stl10_binary",
    **{name: "folder" for name in ("food101", "pets", "flowers", "caltech101", "dtd", "cub")},
    **{name: "folder" for name in ("mit67", "sun397")},
}


@pytest.mark.parametrize("data", sorted(TRANSFER))
def test_transfer_config_evaluates_on_its_layout(data, layouts, tmp_path):
    cfg = load_config(
        ClassificationConfig,
        CONFIGS / "classification" / f"transfer_{data}.yaml",
        [f"data.root={layouts / TRANSFER[data]}", "data.num_workers=0", f"cache={tmp_path}/c"],
    )
    written = Evaluator(cfg, tmp_path / "r.jsonl").evaluate_backbone(
        random_backbone("resnet18", 4, 0)
    )
    table = read_records(tmp_path / "r.jsonl")
    assert written == len(table) >= 1 and set(table["protocol"]) == {"linear-lbfgs"}
    assert set(table["metric"]) == {cfg.lbfgs.metric} and table["value"].between(0, 100).all()
    assert all(len(c["l2_grid"]) == 45 and c["image_size"] == 96 for c in table["config"])
