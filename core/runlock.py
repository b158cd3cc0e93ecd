"""One process per output folder: an exclusive ``flock`` on ``<folder>/.lock``, and moving old runs
aside.

The lock file names its holder (pid, host, command, start time). The kernel drops a ``flock`` when
its holder dies, however it dies, so a lock file whose lock is free is stale: the next process takes
it over and says so. The file itself is never deleted (deleting it would let two processes lock two
different files of one name).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("core.runlock")

LOCK_NAME = ".lock"


class FolderInUse(RuntimeError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(handle: int) -> dict:
    os.lseek(handle, 0, os.SEEK_SET)
    text = os.read(handle, 1 << 16).decode("utf-8", errors="replace")
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    command = " ".join(str(a) for a in holder.get("argv", []))[:120]
    return (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (`{command}`, "
        f"since {holder.get('started', '?')})"
    )


class RunLock:
    """``with RunLock(folder, stage):`` holds ``folder`` for this process or raises FolderInUse at
    once.

    ``wait`` seconds: how long to retry while the recorded holder is already gone but its lock is
    still held (forked data-loader workers of a killed run keep the lock until they notice, within a
    few seconds)."""

    def __init__(self, folder: str | Path, stage: str, wait: float = 15.0):
        self.folder, self.stage, self.wait = Path(folder), stage, wait
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read(fd)
                pid = holder.get("pid")
                same_host = holder.get("host") == socket.gethostname()
                if (
                    isinstance(pid, int)
                    and same_host
                    and not _alive(pid)
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.2)  # the holder is gone; its forked workers are ending
                    continue
                os.close(fd)
                raise FolderInUse(
                    f"{self.folder} is in use by {_describe(holder)}: wait for it to finish or "
                    f"stop it, or choose another --out"
                ) from None
        previous = _read(fd)
        if previous.get("pid") not in (None, os.getpid()):
            log.warning(
                "taking over the stale lock of %s on %s: that process is gone",
                _describe(previous),
                self.folder,
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "stage": self.stage,
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: released cleanly, nothing to take over
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def move_aside(folder: str | Path, keep: tuple[str, ...] = (LOCK_NAME,)) -> Path:
    """Move everything in ``folder`` (but ``keep``) to ``<parent>/stale/<name>-<time>/``; return
    that folder. Never deletes: each entry is renamed, so an interruption leaves every file in one
    of the two folders."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.parent / "stale" / f"{folder.name}-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = folder.parent / "stale" / f"{folder.name}-{stamp}-{n}"
    aside.mkdir(parents=True)
    for entry in sorted(folder.iterdir()):
        if entry.name not in keep:
            entry.rename(aside / entry.name)
    return aside
