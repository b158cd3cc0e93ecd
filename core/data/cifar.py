"""CIFAR-10 / CIFAR-100 from the python-pickle files their authors distribute.

``cifar-10-batches-py/{data_batch_1..5,test_batch}`` and ``cifar-100-python/{train,test}``. The
files are pickles, so they are read with an unpickler that admits only what these files hold (dicts,
lists, bytes, numbers and numpy arrays); anything else is refused, because unpickling an untrusted
file can run code. Images are 32 x 32 RGB stored row-major per channel.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from core.data.base import DataError, ImageDataset, Transform, require_path

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR batch file as a dict with str keys; other content is a DataError."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(
            f"{path} is not a CIFAR batch file ({exc}); it is read with a restricted unpickler "
            "that refuses anything but arrays and plain values"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch file (holds {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        {"class": ("labels", 10)},
    ),
    "cifar100": (
        "cifar-100-python",
        {"train": ["train"], "test": ["test"]},
        {"class": ("fine_labels", 100), "coarse": ("coarse_labels", 20)},
    ),
}


class CIFARDataset(ImageDataset):
    def __init__(
        self,
        root: str | Path,
        name: str = "cifar10",
        part: str = "train",
        transform: Transform | None = None,
    ):
        super().__init__(transform)
        if name not in LAYOUT:
            raise DataError(f"unknown CIFAR variant '{name}'; valid: {', '.join(LAYOUT)}")
        folder_name, parts, labels = LAYOUT[name]
        if part not in parts:
            raise DataError(f"unknown {name} part '{part}'; valid parts: {', '.join(parts)}")
        root = require_path(root, f"{name} folder")
        folder = root / folder_name if (root / folder_name).is_dir() else root
        batches = [read_pickle(require_path(folder / f, f"{name} file {f}")) for f in parts[part]]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{folder}: CIFAR data must be N x 3072 bytes, got {data.shape}")
        self.images = data.reshape(-1, 3, 32, 32)
        self.labels = {
            key: np.concatenate([np.asarray(b[field], dtype=np.int64) for b in batches])
            for key, (field, _) in labels.items()
        }
        self.label_names = {key: classes for key, (_, classes) in labels.items()}

    def __len__(self) -> int:
        return len(self.images)

    def _stored_targets(self, name: str) -> np.ndarray:
        return self.labels[name]

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        return torch.from_numpy(self.images[index].copy()), {
            k: int(v[index]) for k, v in self.labels.items()
        }
