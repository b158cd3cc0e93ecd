"""Training curves of pretraining runs, read from their ``log.jsonl`` (``python -m analysis curves
RUN...``).

Per run (or, with ``--overlay``, all runs in one figure, legend = run label):

* ``loss_terms.png``: one panel per loss term present in the log (loss, embedding_loss, inv, var,
  cov, density, unc_fit, mask_excess) against the step. The terms live on very different scales (the
  density term is ~1e-7, unc_fit goes negative), so each gets its own panel rather than a shared
  axis.
* ``throughput.png``: images per second against the step, raw (faint) and smoothed (trailing mean).
* ``curves.json``: per run, the number of logged steps, the last value of every term and the median
  img/s, so the report can quote numbers.

Also home of the helpers the other analyses share for run folders: ``read_log``, ``step_rows``,
``find_log``, ``run_label`` and ``AnalysisInputError``. Keys missing from a log (a VICReg run has no
masks, uncertainty or unc_fit) are skipped, never an error.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.figures import new_figure, save_figure
from core.io import atomic_write_text

LOSS_TERMS = ("loss", "embedding_loss", "inv", "var", "cov", "density", "unc_fit", "mask_excess")
DEFAULT_OUT = Path("results/figures/curves")
LOG_NAME = "log.jsonl"


class AnalysisInputError(ValueError):
    """An input path cannot be analysed; the message names the path and what to pass instead."""


# ------------------------------------------------------------------------------------------- run
# folders
def find_log(path: str | Path) -> Path:
    """The ``log.jsonl`` of run folder ``path`` (or ``path`` itself when it is that file)."""
    path = Path(path)
    if not path.exists():
        raise AnalysisInputError(
            f"{path}: not found; pass a pretraining run folder (holding {LOG_NAME}) or its "
            f"{LOG_NAME}"
        )
    log = path / LOG_NAME if path.is_dir() else path
    if not log.is_file():
        raise AnalysisInputError(
            f"{path}: no {LOG_NAME} there, so it is not a pretraining run folder; pass the "
            "folder `python -m pretrain --out` wrote"
        )
    return log


def run_label(path: str | Path) -> str:
    """A short name for a run: the run folder's name; a checkpoint other than ``last.pt`` adds its
    stem (``runs/mast/epoch_8.pt`` -> ``mast@epoch_8``, as analysis.invariance names it); a lone
    file outside a run folder is named by its stem."""
    path = Path(path).resolve()
    if path.is_dir():
        return path.name
    folder = path.parent
    in_run = (folder / LOG_NAME).exists() or (folder / "config.yaml").exists()
    if path.name == LOG_NAME or (in_run and path.stem == "last"):
        return folder.name
    return f"{folder.name}@{path.stem}" if in_run else path.stem


def _number(value: Any) -> Any:
    # JsonlLogger writes non-finite floats as the strings "nan"/"inf"; turn them back into floats.
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON object of a run's log (run folder or log file). A cut-off last line (a run killed
    while writing) is dropped; a malformed line elsewhere is an error naming the file and line."""
    log = find_log(path)
    lines = log.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise AnalysisInputError(
                f"{log}:{number} is not a JSON object; is this a pretraining log.jsonl?"
            ) from None
        if not isinstance(row, dict):
            raise AnalysisInputError(
                f"{log}:{number} is not a JSON object; is this a pretraining log.jsonl?"
            )
        rows.append({key: _number(value) for key, value in row.items()})
    return rows


def step_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step lines of a log (not the ``event`` lines such as epoch_end), in step order."""
    steps = [row for row in rows if "event" not in row and "step" in row]
    return sorted(steps, key=lambda row: row["step"])


def series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a scalar ``key`` over the step rows that have it."""
    have = [row for row in rows if isinstance(row.get(key), (int, float))]
    return (
        np.array([row["step"] for row in have], dtype=float),
        np.array([row[key] for row in have], dtype=float),
    )


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (fewer at the start), NaNs ignored."""
    if window <= 1 or len(values) == 0:
        return np.asarray(values, dtype=float)
    out = np.empty(len(values))
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        finite = chunk[np.isfinite(chunk)]
        out[i] = finite.mean() if len(finite) else math.nan
    return out


# ----------------------------------------------------------------------------------------------
# figures
def present_terms(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The loss terms at least one run logged, in ``LOSS_TERMS`` order."""
    return [
        term for term in LOSS_TERMS if any(len(series(rows, term)[0]) for rows in runs.values())
    ]


def plot_loss_terms(runs: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """One panel per loss term; one line per run (legend = run label when there are several
    runs)."""
    terms = present_terms(runs)
    if not terms:
        raise AnalysisInputError(
            f"{title}: the log has no loss terms ({', '.join(LOSS_TERMS)}); is it a "
            "pretraining log?"
        )
    cols = min(3, len(terms))
    rows_n = math.ceil(len(terms) / cols)
    fig, ax = new_figure(4.0 * cols, 3.0 * rows_n)
    ax.remove()  # new_figure gives one axes; this figure needs a grid of panels
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False)).ravel()
    for panel, term in zip(axes, terms):
        for label, rows in runs.items():
            steps, values = series(rows, term)
            if len(steps):
                panel.plot(steps, values, label=label, linewidth=1.2)
        panel.set_title(term)
        panel.set_xlabel("step")
        panel.set_ylabel(term)
        if len(runs) > 1:
            panel.legend(fontsize="small")
    for panel in axes[len(terms) :]:
        panel.set_visible(False)
    fig.suptitle(f"Training loss terms: {title}")
    return save_figure(fig, path)


def plot_throughput(
    runs: dict[str, list[dict[str, Any]]], path: Path, title: str, window: int
) -> Path | None:
    """Images per second against the step, raw and smoothed; None when no run logged img_per_s."""
    if not any(len(series(rows, "img_per_s")[0]) for rows in runs.values()):
        return None
    fig, ax = new_figure()
    for label, rows in runs.items():
        steps, values = series(rows, "img_per_s")
        if not len(steps):
            continue
        raw = ax.plot(steps, values, alpha=0.3, linewidth=0.8, label=f"{label} (raw)")[0]
        ax.plot(
            steps,
            smooth(values, window),
            color=raw.get_color(),
            linewidth=1.6,
            label=f"{label} (trailing mean of {window} logged steps)",
        )
    ax.set_title(f"Training throughput: {title}")
    ax.set_xlabel("step")
    ax.set_ylabel("images per second")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def run_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Logged steps, the last value of every loss term and the median img/s of one run
    (JSON-ready)."""
    last = {}
    for term in LOSS_TERMS:
        values = series(rows, term)[1]
        if len(values):
            last[term] = float(values[-1]) if math.isfinite(values[-1]) else None
    speed = series(rows, "img_per_s")[1]
    return {
        "steps_logged": len(rows),
        "last_step": rows[-1]["step"] if rows else None,
        "last": last,
        "median_img_per_s": float(np.median(speed)) if len(speed) else None,
    }


def write_curves(
    runs: dict[str, list[dict[str, Any]]], folder: Path, title: str, window: int
) -> list[Path]:
    written = [plot_loss_terms(runs, folder / "loss_terms.png", title)]
    speed = plot_throughput(runs, folder / "throughput.png", title, window)
    written += [speed] if speed else []
    summary = {label: run_summary(rows) for label, rows in runs.items()}
    written.append(atomic_write_text(folder / "curves.json", json.dumps(summary, indent=2) + "\n"))
    return written


# -------------------------------------------------------------------------------------------------
# CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="pretraining run folders (holding log.jsonl) or log.jsonl files",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder; each run gets OUT/<run label>/ (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="one figure set with every run (legend = run label) in OUT/overlay/ instead of one "
        "per run",
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=20,
        metavar="STEPS",
        help="window of the trailing mean over img/s (default: 20 logged steps)",
    )


def unique_label(label: str, taken: set[str] | dict[str, Any]) -> str:
    """``label``, or ``label-2``, ``label-3``... when two inputs share a folder name (so outputs
    never collide)."""
    candidate, count = label, 2
    while candidate in taken:
        candidate, count = f"{label}-{count}", count + 1
    return candidate


def load_runs(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Run label -> step rows (see ``unique_label`` for two runs with the same folder name)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        label = unique_label(run_label(path), runs)
        runs[label] = step_rows(read_log(path))
        if not runs[label]:
            raise AnalysisInputError(
                f"{path}: {LOG_NAME} holds no training steps yet; is the run started?"
            )
    return runs


def run(args: argparse.Namespace) -> list[Path]:
    runs = load_runs(args.runs)
    if args.overlay:
        return write_curves(runs, args.out / "overlay", ", ".join(runs), args.smooth)
    written: list[Path] = []
    for label, rows in runs.items():
        written += write_curves({label: rows}, args.out / label, label, args.smooth)
    return written
