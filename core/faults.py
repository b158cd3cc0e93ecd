"""Fault injection for the tests: ``MAST_FAULT=<point>:<n>`` SIGKILLs this process the n-th time it
reaches ``<point>``. Points: ``step`` (an optimiser step done), ``checkpoint_write`` (a checkpoint
half written to its temporary file), ``checkpoint_saved`` (a checkpoint renamed into place). Unset,
every call is a no-op."""

from __future__ import annotations

import os
import signal
from typing import Any, BinaryIO, cast

_counts: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("MAST_FAULT")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    return name, int(count or 1)


def point(name: str) -> None:
    """Count a pass of ``name``; SIGKILL this process on the pass ``MAST_FAULT`` names."""
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


class _Writer:
    """A file object that passes ``point(name)`` once, after its first write: the file is then
    partial."""

    def __init__(self, handle: BinaryIO, name: str):
        self._handle, self._name, self._written = handle, name, False

    def write(self, data: Any) -> int:
        n = self._handle.write(data)
        if not self._written:
            self._written = True
            self._handle.flush()
            point(self._name)
        return n

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._handle, attr)


def writer(handle: BinaryIO, name: str) -> BinaryIO:
    """``handle``, wrapped so that point ``name`` is passed mid-write when ``MAST_FAULT`` names
    it."""
    armed = _armed()
    # _Writer stands in for the handle (its other attributes pass through __getattr__)
    return cast(BinaryIO, _Writer(handle, name)) if armed and armed[0] == name else handle
