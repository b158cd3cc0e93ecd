"""Result records: one JSON object per line in ``results/records/<stage>.jsonl``.

Each number the suite produces becomes one record with everything needed to trace it (run, commit,
method, checkpoint hash, data set, task, protocol, seed, metric, config). Appends are atomic: the
line is written with a single ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``,
then fsynced, so processes appending to one file at once lose no line and never interleave.
``read_records`` loads records into a pandas DataFrame for the analysis stage.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.io import sha256_file

log = logging.getLogger("core.records")

FIELDS = (
    "run_id",
    "time",
    "git_commit",
    "stage",
    "method",
    "arch",
    "pretrain_ckpt",
    "pretrain_epochs",
    "dataset",
    "task",
    "protocol",
    "seed",
    "metric",
    "value",
    "n_train",
    "n_test",
    "config",
)
#: Fields a caller must give; the rest default (time, run_id, git_commit) or may be null.
REQUIRED = ("stage", "method", "dataset", "task", "protocol", "seed", "metric", "value")


class RecordError(ValueError):
    """A record is malformed; the message lists the missing or bad fields."""


def new_run_id() -> str:
    """A short, unique run id: UTC time plus random hex."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def checkpoint_ref(path: str | Path | None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of a checkpoint file (None for none, e.g. a random-init floor)."""
    if path is None:
        return None
    return {"path": str(path), "sha256": sha256_file(path)}


def ckpt_field(ref: Any, name: str = "sha256") -> str | None:
    """A field of a record's ``pretrain_ckpt`` (``sha256`` or ``path``): the one rule for telling
    which checkpoint a record measured; None for a record of no checkpoint (random init)."""
    value = ref.get(name) if isinstance(ref, dict) else None
    return value or None


def floor_init(config: Any) -> str | None:
    """The init a random-init record's ``config`` names (``core.checkpoints.FLOOR_INIT``); None for
    a floor of the older definition, or a record without a config."""
    value = config.get("init") if isinstance(config, dict) else None
    return value or None


def make_record(**fields: Any) -> dict[str, Any]:
    """A complete record: schema fields in order (missing optional ones null) followed by any
    extras."""
    missing = [name for name in REQUIRED if fields.get(name) is None]
    if missing:
        raise RecordError(f"record lacks required fields {missing} (required: {list(REQUIRED)})")
    if not isinstance(fields["value"], (int, float)) or isinstance(fields["value"], bool):
        raise RecordError(f"record value must be a number, got {fields['value']!r}")
    if "git_commit" not in fields:
        from core.cli import git_commit

        fields["git_commit"] = git_commit()
    fields.setdefault("run_id", new_run_id())
    fields.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = {name: fields.pop(name, None) for name in FIELDS}
    record.update(fields)
    return record


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line to ``path`` atomically (safe with concurrent writers)."""
    missing = [name for name in REQUIRED if record.get(name) is None]
    if missing:
        raise RecordError(
            f"record lacks required fields {missing}; build records with make_record()"
        )
    line = (json.dumps(_json_safe(record), allow_nan=False, default=str) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def iter_records(path: str | Path) -> Iterable[dict[str, Any]]:
    """Records of one file; an unreadable line (e.g. torn by a crash) is skipped with a warning
    naming it."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping unreadable record at %s:%d", path, number)


def record_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """A records file, every ``*.jsonl`` in a folder, or an explicit list of files."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        return sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    return [Path(p) for p in source]


def read_records(source: str | Path | Iterable[str | Path] = "results/records"):
    """All records from ``source`` (file, folder or list of files) as a pandas DataFrame."""
    import pandas as pd

    rows = [row for path in record_files(source) for row in iter_records(path)]
    frame = pd.DataFrame(rows, columns=None if rows else list(FIELDS))
    for name in FIELDS:
        if name not in frame.columns:
            frame[name] = None
    return frame
