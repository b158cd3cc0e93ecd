"""What is evaluated: tasks (a data split and one of its labels) and their train / val / test parts.

FactorShapes has all three parts. CIFAR, STL-10 and Fashion-MNIST have train and test: a fixed
fraction of train (drawn with seed 0, the same for every run) becomes the validation part. An image
folder needs ``train/`` and ``val/`` (the ImageNet layout: val is the test part, validation is held
out of train) or ``train/``, ``val/`` and ``test/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.config import DataConfig
from core.data import build_dataset, default_data_root
from core.data.base import DataError, ImageDataset

#: Which stored part plays test, and whether validation is held out of train, per data set.
NATIVE_PARTS = {
    "factorshapes": ("train", "val", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test"),
    "fashion_mnist": ("train", "test"),
}


@dataclasses.dataclass(frozen=True)
class Task:
    data: DataConfig  # with the task's split set
    label: str
    classes: int

    @property
    def dataset_name(self) -> str:
        """The records' ``dataset`` field, e.g. ``factorshapes/cls-upright`` or ``cifar10``."""
        if self.data.dataset == "factorshapes":
            return f"factorshapes/{self.data.split}"
        if self.data.dataset == "folder":
            return f"folder:{Path(self.data.root).name}"
        return self.data.dataset


def data_identity(data: DataConfig) -> dict:
    """The fields of ``data`` that decide which images a part holds (for cache keys and records)."""
    root = str(Path(data.root or default_data_root()).expanduser().resolve())
    identity = {"dataset": data.dataset, "root": root}
    if data.dataset == "factorshapes":
        identity.update(
            split=data.split,
            image_size=data.image_size,
            n=data.n,
            generator_seed=data.generator_seed,
        )
        # absent at 1, so that caches and ceilings made before the key stay valid
        if data.object_scale != 1.0:
            identity["object_scale"] = data.object_scale
    return identity


def stored_parts(data: DataConfig) -> tuple[str, ...]:
    """The parts on disk that this data set offers (train first; the last one is the test part)."""
    if data.dataset == "folder":
        root = Path(data.root or "").expanduser()
        has = {part: (root / part).is_dir() for part in ("train", "val", "test")}
        if not has["train"] or not (has["val"] or has["test"]):
            raise DataError(
                f"image folder {root} needs train/ and val/ or test/ sub-folders of class folders "
                "for classification (with one of val/ and test/, it is the test part and a fixed "
                "val_fraction of train the validation part)"
            )
        if not has["val"]:
            return ("train", "test")
        return ("train", "val", "test") if has["test"] else ("train", "val")
    return NATIVE_PARTS[data.dataset]


def resolve_tasks(data: DataConfig, names: list[str]) -> list[Task]:
    """Tasks named ``split/label`` (FactorShapes) or ``label``; none named: every task of the data
    set."""
    if data.dataset == "factorshapes":
        from core.data.factorshapes import FACTOR_TASKS, FACTORS, LABELS_BY_SPLIT

        pairs = [tuple(n.split("/", 1)) if "/" in n else (data.split, n) for n in names] or list(
            FACTOR_TASKS
        )
        tasks = []
        for split, label in pairs:
            if split not in LABELS_BY_SPLIT or split.startswith("det") or split == "pretrain":
                raise DataError(
                    f"'{split}/{label}': classification needs split cls-upright or cls-rot"
                )
            if label not in LABELS_BY_SPLIT[split]:
                raise DataError(
                    f"no label '{label}' in FactorShapes {split}; labels: "
                    f"{', '.join(LABELS_BY_SPLIT[split])}"
                )
            tasks.append(Task(dataclasses.replace(data, split=split), label, FACTORS[label]))
        return tasks
    stored_parts(data)
    labels = build_dataset(data, part="train", progress=False).label_names
    if not labels:
        raise DataError(
            f"{data.dataset} at {data.root} has no labels (an image folder needs class sub-folders)"
        )
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise DataError(f"unknown labels {unknown}; {data.dataset} has: {', '.join(labels)}")
    return [Task(data, name, labels[name]) for name in (names or list(labels))]


def held_out(n: int, fraction: float) -> np.ndarray:
    """Indices of the validation part held out of a train part of ``n`` samples (fixed: seed 0)."""
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[: max(1, round(fraction * n))])


def split_indices(
    data: DataConfig, n_train: int, val_fraction: float
) -> dict[str, tuple[str, np.ndarray | None]]:
    """``{"train" | "val" | "test": (stored part, indices into it or None for all)}``."""
    parts = stored_parts(data)
    if len(parts) == 3:
        return {"train": ("train", None), "val": (parts[1], None), "test": (parts[2], None)}
    val = held_out(n_train, val_fraction)
    train = np.setdiff1d(np.arange(n_train), val)
    return {"train": ("train", train), "val": ("train", val), "test": (parts[1], None)}


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-balanced subset: ``round(fraction * n_c)`` (at least 1) samples of every class c,
    drawn with ``seed``; sorted indices. The same (labels, fraction, seed) always gives the same
    subset."""
    rng = np.random.default_rng([seed, round(fraction * 1e6)])
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(
            rng.choice(members, size=max(1, round(fraction * len(members))), replace=False)
        )
    return np.sort(np.concatenate(chosen))


def build_part(data: DataConfig, part: str, transform=None) -> ImageDataset:
    return build_dataset(data, part=part, transform=transform, progress=False)
