"""Images from a folder: ImageNet layout (one sub-folder per class) or a flat/unlabelled tree.

Any size and mode (grayscale, palette, RGBA, 16-bit) is read and converted to RGB. An unreadable
file is skipped (logged and counted in ``n_skipped``; the next readable image takes its place so
batches keep their size), or raises with ``on_bad_image="error"``. ``verify=True`` decodes every
file up front and drops the bad ones, so that ``len()`` counts only readable images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from core.data.base import (
    DECODE_ERRORS,
    DataError,
    ImageDataset,
    Transform,
    read_image,
    require_path,
)
from core.logs import progress

log = logging.getLogger("core.data")
T = TypeVar("T")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def jpeg_header(path: Path) -> tuple[int, int] | None:
    """(height, width) of a JPEG file in RGB or grey that torchvision's decode_jpeg reads as PIL
    does; None for any other file (PNG, CMYK JPEG, ...). Reads the header only."""
    with Image.open(path) as image:
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return None
        width, height = image.size
    return height, width


class ImageFolderDataset(ImageDataset):
    def __init__(
        self,
        root: str | Path,
        part: str | None = None,
        labels: Literal["auto", "subfolders", "none"] = "auto",
        on_bad_image: Literal["skip", "error"] = "skip",
        verify: bool = False,
        transform: Transform | None = None,
    ):
        super().__init__(transform)
        root = require_path(root, "image folder")
        if part and (root / part).is_dir():
            root = root / part
        self.root, self.on_bad_image = root, on_bad_image
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        use_classes = labels == "subfolders" or (labels == "auto" and class_dirs and not loose)
        if labels == "subfolders" and not class_dirs:
            raise DataError(
                f"{root} has no class sub-folders (set data.folder_labels: none for unlabelled "
                "images)"
            )
        self.classes = [d.name for d in class_dirs] if use_classes else []
        if use_classes:
            self.samples = [(p, k) for k, d in enumerate(class_dirs) for p in _images_under(d)]
        else:
            self.samples = [(p, -1) for p in _images_under(root)]
        if not self.samples:
            raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}")
        self.label_names = {"class": len(self.classes)} if use_classes else {}
        self.bad_files: set[Path] = set()
        if verify:
            self._drop_unreadable()

    @property
    def n_skipped(self) -> int:
        """Unreadable files met so far in this process."""
        return len(self.bad_files)

    def __len__(self) -> int:
        return len(self.samples)

    def _bad(self, path: Path, exc: Exception) -> None:
        if self.on_bad_image == "error":
            raise DataError(
                f"unreadable image {path}: {exc} (set data.on_bad_image: skip to skip such files)"
            )
        if path not in self.bad_files:
            self.bad_files.add(path)
            log.warning(
                "skipping unreadable image %s (%s); %d skipped so far",
                path,
                exc,
                len(self.bad_files),
            )

    def _drop_unreadable(self) -> None:
        good = []
        for path, label in progress(self.samples, desc=f"verify {self.root.name}"):
            try:
                with Image.open(path) as image:
                    image.load()
                good.append((path, label))
            except DECODE_ERRORS as exc:
                self._bad(path, exc)
        if not good:
            raise DataError(f"no readable images under {self.root}")
        self.samples = good
        if self.bad_files:
            log.warning(
                "%s: %d unreadable image(s) skipped, %d kept",
                self.root,
                len(self.bad_files),
                len(good),
            )

    def _stored_targets(self, name: str) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def encoded(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        """A JPEG's bytes and size, its body left for the device to decode (a file whose header
        does not read is skipped as in ``_load``); None for other files, or with a transform."""
        if self.transform is not None:
            return None
        (path, size), _ = self._first_readable(index, lambda p: (p, jpeg_header(p)))
        if size is None:
            return None
        return torch.from_numpy(np.fromfile(path, dtype=np.uint8)), *size

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        image, label = self._first_readable(index, read_image)
        return image, ({"class": label} if self.classes else {})

    def _first_readable(self, index: int, read: Callable[[Path], T]) -> tuple[T, int]:
        """``read`` of sample ``index``'s file and its label; a file that does not read is skipped
        for the next one (so batches keep their size) or raises, as ``on_bad_image`` says."""
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return read(path), label
            except DECODE_ERRORS as exc:
                self._bad(path, exc)
        raise DataError(f"no readable images under {self.root}")
