"""FactorShapes as a Dataset: a cached part read back with its labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data.base import ImageDataset, Transform, pil_to_tensor
from core.data.factorshapes.cache import ensure_split
from core.data.factorshapes.scene import (
    DET_LABELS,
    DET_SPLITS,
    FACTORS,
    LABELS_BY_SPLIT,
    check_split,
)


class FactorShapesDataset(ImageDataset):
    """A cached FactorShapes part (generated on first use). Targets: the labels of
    ``LABELS_BY_SPLIT[split]`` as python ints (det: ``count`` class k = k + 1 objects; boxes are in
    ``coco_files(self.folder)``)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "pretrain",
        part: str = "train",
        n: int | None = None,
        image_size: int | None = None,
        seed: int = 0,
        transform: Transform | None = None,
        workers: int | None = None,
        progress: bool = True,
        object_scale: float = 1.0,
    ):
        super().__init__(transform)
        check_split(split, part)
        self.split, self.part = split, part
        self.folder = ensure_split(
            root, split, part, n, image_size, seed, workers, progress, object_scale
        )
        self.meta = json.loads((self.folder / "meta.json").read_text())
        with np.load(self.folder / "labels.npz") as stored:
            self.labels = {name: stored[name] for name in LABELS_BY_SPLIT[split]}
        self.label_names = {name: (DET_LABELS | FACTORS)[name] for name in LABELS_BY_SPLIT[split]}
        self.images = (
            None if split in DET_SPLITS else np.load(self.folder / "images.npy", mmap_mode="r")
        )

    def __len__(self) -> int:
        return int(self.meta["n"])

    def _stored_targets(self, name: str) -> np.ndarray:
        return self.labels[name]

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.images is None:
            with Image.open(self.folder / "images" / f"{index:06d}.png") as png:
                image = pil_to_tensor(png)
        else:
            image = torch.from_numpy(np.array(self.images[index]).transpose(2, 0, 1).copy())
        return image, {name: int(values[index]) for name, values in self.labels.items()}
