"""The one interface every image data set of the suite implements.

An item is ``(image, target)``: ``image`` a ``torch.uint8`` tensor of shape ``[3, H, W]`` (RGB,
after the optional ``transform``), ``target`` a ``dict[str, int]`` of labels (empty for unlabelled
data). Views for pretraining are built on the uint8 tensors; classification reads the labels by
name.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

log = logging.getLogger("core.data")

Transform = Callable[[torch.Tensor], torch.Tensor]


#: What PIL raises on a file it cannot decode (not an image, truncated, or too large).
DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


class DataError(ValueError):
    """A data set cannot be used as configured; the message names the problem and the fix."""


class MissingPathError(DataError, FileNotFoundError):
    """A data path that does not exist (a DataError and a FileNotFoundError)."""


class ImageDataset(torch.utils.data.Dataset):
    """Base class: subclasses set ``label_names`` and implement ``__len__`` and ``_load(index)``."""

    #: label name -> number of classes; empty when the data set has no labels.
    label_names: dict[str, int] = {}

    def __init__(self, transform: Transform | None = None):
        self.transform = transform

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        raise NotImplementedError

    def targets(self, name: str) -> np.ndarray:
        """Every sample's label ``name`` as int64, without decoding images where the data set allows
        it."""
        if name not in self.label_names:
            raise DataError(
                f"no label '{name}' in this data set; labels: "
                f"{', '.join(self.label_names) or 'none'}"
            )
        stored = self._stored_targets(name)
        if stored is not None:
            return np.asarray(stored, dtype=np.int64)
        return np.array([self._load(i)[1][name] for i in range(len(self))], dtype=np.int64)

    def encoded(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        """Image ``index`` undecoded, for the training device to decode: (the file's bytes as uint8
        [N], height, width), or None where the data set has no such form (then ``self[index]``)."""
        return None

    def _stored_targets(self, name: str) -> np.ndarray | None:
        """Subclasses that hold their labels in memory return them here."""
        return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        image, target = self._load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def decode_on(device: torch.device, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """``images`` on ``device`` as uint8 [3, H, W], the undecoded JPEGs among them (uint8 [N] from
    ``ImageDataset.encoded``) decoded there in one batched call (nvJPEG on CUDA); grey JPEGs are
    repeated to three channels, as PIL's RGB conversion does. A batch the call rejects is decoded
    one file at a time, and a file the device cannot decode is decoded by PIL, as the loader would
    have: a run stops only on a file that PIL cannot read either."""
    where = [i for i, image in enumerate(images) if image.dim() == 1]
    out = list(images)
    if where:
        encoded = [images[i].cpu() for i in where]
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED, device=device)
        except RuntimeError:
            decoded = [_decode_one(data, device) for data in encoded]
        for i, image in zip(where, decoded):
            out[i] = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return [image.to(device, non_blocking=True) for image in out]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.UNCHANGED, device=device)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0].rsplit(", ", 1)[-1]  # past torchvision's source line
    try:
        decoded = read_image(io.BytesIO(data.numpy().tobytes()))
    except DECODE_ERRORS:
        raise DataError(
            f"a JPEG of this batch does not decode on {device} ({reason}), nor with PIL: find it "
            "with data.verify_images: true (or python -m core.data check), or set "
            "data.decode: loader"
        ) from None
    log.warning(
        "a JPEG did not decode on %s (%s); PIL decoded it, as the loader would", device, reason
    )
    return decoded


def require_path(
    path: str | Path, what: str, hint: str = "check data.root or pass --set data.root=PATH"
) -> Path:
    """Return ``path`` as a Path, or raise a one-line MissingPathError naming it and the fix
    (``hint``) when it does not exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingPathError(f"{what} not found: {path} ({hint})")
    return path


def read_image(source: Path | BinaryIO) -> torch.Tensor:
    """Decode one file (a path, or its bytes in a file object) with PIL to a ``[3, H, W]`` uint8 RGB
    tensor; raises one of ``DECODE_ERRORS`` on an unreadable one."""
    with Image.open(source) as image:
        image.load()
        return pil_to_tensor(image)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Any PIL image (grayscale, palette, RGBA, CMYK, 16-bit) as a ``[3, H, W]`` uint8 RGB
    tensor."""
    if image.mode in ("P", "LA", "PA") or (image.mode == "RGBA"):
        # Composite transparency on black so that palette/alpha images never keep an alpha channel.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / max(float(array.max()), 1.0)
        image = Image.fromarray((array * scale).round().astype(np.uint8), mode="L")
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
