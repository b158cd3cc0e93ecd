"""STL-10 in the binary format its authors distribute (``stl10_binary/*.bin``).

Each image is 3 x 96 x 96 bytes, channel-major and column-major within a channel; labels are bytes
1..10 (stored here as 0..9). Parts: ``train`` (5,000 labelled), ``test`` (8,000 labelled),
``unlabeled`` (100,000) and ``train+unlabeled`` (105,000, no labels: the usual pretraining set).
Files are memory-mapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.base import DataError, ImageDataset, Transform, require_path

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin", None),
}
PARTS = (*FILES, "train+unlabeled")


def _images(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(
            f"{path} is not an STL-10 image file (size {size} is not a multiple of {IMAGE_BYTES})"
        )
    return np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)


class STL10Dataset(ImageDataset):
    def __init__(self, root: str | Path, part: str = "train", transform: Transform | None = None):
        super().__init__(transform)
        if part not in PARTS:
            raise DataError(f"unknown STL-10 part '{part}'; valid parts: {', '.join(PARTS)}")
        root = require_path(root, "STL-10 folder")
        folder = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
        names = ("train", "unlabeled") if part == "train+unlabeled" else (part,)
        self.arrays, self.labels = [], None
        for name in names:
            x_file, y_file = FILES[name]
            self.arrays.append(_images(require_path(folder / x_file, f"STL-10 file {x_file}")))
            if y_file and len(names) == 1:
                labels = np.fromfile(
                    require_path(folder / y_file, f"STL-10 file {y_file}"), dtype=np.uint8
                )
                if len(labels) != len(self.arrays[0]) or labels.min() < 1 or labels.max() > 10:
                    raise DataError(
                        f"{folder / y_file} does not match {x_file} (labels must be 1..10, one per "
                        "image)"
                    )
                self.labels = labels.astype(np.int64) - 1
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.label_names = {"class": len(CLASSES)} if self.labels is not None else {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _stored_targets(self, name: str) -> np.ndarray | None:
        return self.labels

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        raw = self.arrays[which][index - self.offsets[which]]
        # column-major -> [3, H, W]
        image = torch.from_numpy(np.ascontiguousarray(raw.transpose(0, 2, 1)))
        return image, ({"class": int(self.labels[index])} if self.labels is not None else {})
