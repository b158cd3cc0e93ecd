"""Fashion-MNIST (and MNIST) from the IDX files their authors distribute, gzipped or not.

``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``. The 28 x 28
grayscale images are replicated to 3 channels so every backbone of the suite reads them unchanged.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from core.data.base import DataError, ImageDataset, Transform, require_path

PARTS = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (magic 0x0000 08 <ndim>, big-endian sizes, uint8 data) as an array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(
            f"{path}: header says {shape} ({int(np.prod(shape))} bytes), file holds {body.size}"
        )
    return body.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{stem}[.gz] not found in {folder} (check data.root)")


class IDXDataset(ImageDataset):
    def __init__(self, root: str | Path, part: str = "train", transform: Transform | None = None):
        super().__init__(transform)
        if part not in PARTS:
            raise DataError(f"unknown Fashion-MNIST part '{part}'; valid parts: {', '.join(PARTS)}")
        folder = require_path(root, "Fashion-MNIST folder")
        self.images = read_idx(_find(folder, f"{PARTS[part]}-images-idx3-ubyte"))
        self.labels = read_idx(_find(folder, f"{PARTS[part]}-labels-idx1-ubyte")).astype(np.int64)
        if self.images.ndim != 3 or len(self.images) != len(self.labels):
            raise DataError(
                f"{folder}: {part} images {self.images.shape} and labels {self.labels.shape} do "
                "not match"
            )
        self.label_names = {"class": int(self.labels.max()) + 1 if len(self.labels) else 0}

    def __len__(self) -> int:
        return len(self.images)

    def _stored_targets(self, name: str) -> np.ndarray:
        return self.labels

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        image = torch.from_numpy(self.images[index].copy())
        return image.unsqueeze(0).expand(3, -1, -1).contiguous(), {"class": int(self.labels[index])}
