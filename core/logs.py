"""Console logging, JSON-lines logs and tqdm progress, all quiet on non-main processes."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from core.io import plain

T = TypeVar("T")


def setup_logging(level: int = logging.INFO, rank: int = 0) -> None:
    """One-line console messages (``time level name: message``); warnings and errors only on rank >
    0."""
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        stream=sys.stderr,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def progress_disabled(rank: int = 0) -> bool:
    """Bars are off on non-main processes and when MAST_NO_PROGRESS=1."""
    return rank != 0 or os.environ.get("MAST_NO_PROGRESS", "0") == "1"


def progress(
    iterable: Iterable[T], desc: str = "", total: int | None = None, rank: int = 0, **kwargs: Any
) -> Iterator[T]:
    """A tqdm bar on the main process (off when MAST_NO_PROGRESS=1 or rank > 0)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=progress_disabled(rank),
        dynamic_ncols=True,
        mininterval=1.0,
        **kwargs,
    )


def progress_bar(total: int, desc: str = "", rank: int = 0, initial: int = 0) -> tqdm:
    """A manually updated tqdm bar (``bar.update(n)``), with the same quiet rules as
    ``progress``."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=progress_disabled(rank),
        dynamic_ncols=True,
        mininterval=1.0,
    )


class JsonlLogger:
    """Append one JSON object per call to a file, flushed at once so a killed run keeps its log.

    Tensors and numpy scalars are converted; ``time`` (seconds since the epoch) is added to each
    line. On non-main processes (``enabled=False``) it does nothing.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._handle = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8", buffering=1)

    def log(self, **fields: Any) -> None:
        if self._handle is None:
            return
        self._handle.write(json.dumps({"time": round(time.time(), 3), **plain(fields)}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a log (a torn last line of a killed run is ignored)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
