"""The command-line contract every stage keeps: ``--config FILE``, ``--set key=value ...``, ``--out
DIR``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from core.config import ConfigError, field_names, load_config, save_config
from core.io import atomic_write_text

T = TypeVar("T")


def add_common_args(
    parser: argparse.ArgumentParser, schema: type, default_out: str | None = None
) -> None:
    """Add ``--config``, ``--set`` and ``--out`` to ``parser``; the help lists the schema's keys."""
    parser.add_argument(
        "--config", type=Path, help="YAML config file (defaults apply to keys it omits)"
    )
    add_set_arg(
        parser,
        "override config keys, e.g. --set seed=1 train.batch_size=64; valid keys: "
        + ", ".join(field_names(schema)),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        required=default_out is None,
        help="output folder; the resolved config is saved in it"
        + (f" (default: {default_out})" if default_out else ""),
    )


def add_set_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE ...`` (repeatable, collected in ``args.overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help=help,
    )


def config_from_args(schema: type[T], args: argparse.Namespace) -> T:
    """Load the config named by ``args``; a config error ends the program with its one-line
    message."""
    try:
        return load_config(schema, args.config, args.overrides)
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")


def git_commit(repo: str | Path | None = None) -> str:
    """The current commit hash (with ``-dirty`` when the tree has changes), or ``unknown`` outside
    git."""
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def prepare_out_dir(out: str | Path, config: Any, stage: str) -> Path:
    """Create ``out``, save the resolved config and a ``run.json`` (stage, command, commit,
    versions, machine, time). The machine is there because CPU float results are reproducible per
    CPU model only."""
    import torch

    from core.cpu import cpu_model
    from core.env import versions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    run = {
        "stage": stage,
        "argv": sys.argv,
        "git_commit": git_commit(),
        "versions": versions(),
        "machine": {"cpu": cpu_model(), "torch_threads": torch.get_num_threads()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": getattr(config, "seed", None),
    }
    atomic_write_text(out / "run.json", json.dumps(run, indent=2) + "\n")
    return out


def note_run(out: str | Path, **fields: Any) -> None:
    """Add ``fields`` to ``out/run.json`` (atomically), e.g. what a stage decided after it
    started."""
    path = Path(out) / "run.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        run = {}
    atomic_write_text(path, json.dumps({**run, **fields}, indent=2) + "\n")
