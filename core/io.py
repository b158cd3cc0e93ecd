"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The recipe is the usual one: write a temporary file in the destination folder, flush and fsync it,
rename it over the destination (atomic on POSIX within one file system), then fsync the folder so
the rename itself survives a power cut.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temporary file, then move it to ``path`` atomically.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content; the temporary
    file is removed on an exception and is recognisable by its ``.tmp-`` prefix otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (torch is imported here, not at module load)."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def suite_cache(name: str, override: str) -> Path:
    """The suite's cache folder ``name``: $``override`` if set, else $XDG_CACHE_HOME
    (~/.cache)/mast-suite/name."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mast-suite" / name
    return Path(os.environ.get(override) or default).expanduser()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """``value`` with tensors, arrays and numpy scalars turned into Python numbers and lists
    (recursively), ready for JSON; a non-finite float becomes its string (``"nan"``), which JSON
    can carry."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
