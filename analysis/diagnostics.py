"""``python -m analysis diagnostics``: what each pretraining run's training did, one row per run.

  python -m analysis diagnostics [--runs results/runs] [--results results]

For every run folder under ``--runs`` and its ``sweeps/<sweep>/`` sub-folders (those with
``config.yaml``, ``log.jsonl`` and ``last.pt``), from the last 5 logged steps: the VICReg terms
(invariance, variance, covariance), the embedding's part of the loss, the mean gate rate of the
non-crop ops (how often a pair differs in them) and the spread of the uncertainty weights; from the
checkpoint: how far the masks moved (std of the mask logits, initialised at 0.01) and how alike the
ops' masks are (mean off-diagonal correlation of their logits). These are the signals behind "masks
that do not specialise, uncertainty that does not vary, gates that never fire". Written to
``tables/diagnostics.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.tables import keep_gone_runs
from core import markdown as md
from core.config import read_yaml
from core.io import atomic_write_text

TAIL = 5  # logged steps averaged at the end of a run
COLUMNS = (
    "run",
    "method",
    "views",
    "resample",
    "inv",
    "var",
    "cov",
    "embedding_loss",
    "gate_rate_other",
    "unc_spread",
    "mask_logit_std",
    "mask_corr",
)


def run_folders(runs_dir: Path) -> list[Path]:
    """Run folders directly under ``runs_dir`` and under its ``sweeps/<sweep>/``."""
    candidates = [*runs_dir.glob("*"), *runs_dir.glob("sweeps/*/*")]
    return sorted(
        p
        for p in candidates
        if all((p / f).is_file() for f in ("config.yaml", "log.jsonl", "last.pt"))
    )


def _tail_mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows[-TAIL:] if isinstance(r.get(key), (int, float))]
    return float(np.mean(values)) if values else float("nan")


def _dict_mean(rows: list[dict], key: str, skip: tuple[str, ...] = ()) -> float:
    values = [
        v
        for r in rows[-TAIL:]
        if isinstance(r.get(key), dict)
        for op, v in r[key].items()
        if op not in skip
    ]
    return float(np.mean(values)) if values else float("nan")


def mask_movement(logits: torch.Tensor | None) -> tuple[float, float]:
    """(mean std of each op's mask logits, mean off-diagonal correlation of the ops' logits); NaN
    without learned masks."""
    if logits is None or logits.dim() != 2 or logits.shape[0] < 2:
        return float("nan"), float("nan")
    logits = logits.detach().float()
    corr = torch.corrcoef(logits).numpy()
    off = corr[~np.eye(len(corr), dtype=bool)]
    return float(logits.std(dim=1).mean()), float(np.nanmean(off))


def diagnose(folder: Path, runs_dir: Path) -> dict:
    cfg = read_yaml(folder / "config.yaml")
    rows = [
        json.loads(line)
        for line in (folder / "log.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    # masks only: no format check
    state = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)
    learned = state.get("mask_kind", "learned") == "learned" and state.get("masks") is not None
    logit_std, corr = mask_movement(state["masks"] if learned else None)
    views = cfg.get("views", {})
    return {
        "run": folder.relative_to(runs_dir).as_posix(),
        "method": cfg.get("method"),
        "views": views.get("mode"),
        "resample": views.get("resample")
        + (f" p={views.get('resample_p')}" if views.get("resample") == "bernoulli" else ""),
        "inv": _tail_mean(rows, "inv"),
        "var": _tail_mean(rows, "var"),
        "cov": _tail_mean(rows, "cov"),
        "embedding_loss": _tail_mean(rows, "embedding_loss"),
        "gate_rate_other": _dict_mean(rows, "gate_rate", skip=("crop",)),
        "unc_spread": _dict_mean(rows, "uncertainty_spread"),
        "mask_logit_std": logit_std,
        "mask_corr": corr,
    }


def diagnostics_table(runs_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(
        [diagnose(f, runs_dir) for f in run_folders(runs_dir)], columns=list(COLUMNS)
    )


def markdown(table: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, float):
            return "–" if np.isnan(value) else f"{value:.3f}"
        return str(value) if value is not None else "–"

    rows = [[cell(v) for v in row] for row in table.itertuples(index=False)]
    return "\n".join(md.table(table.columns, rows))


LEGEND = (
    "Last 5 logged steps of each run: `inv`, `var`, `cov` are the VICReg terms (MAST's `inv` is "
    "the gated, uncertainty-weighted subspace error); `gate_rate_other`: how often a pair differs "
    "in an op other than crop; `unc_spread`: std over the batch of log s (uncertainty weights); "
    "`mask_logit_std`: how far the mask logits moved from their N(0, 0.01) start (0.5 moves a mask "
    "from 0.5 to about 0.38/0.62); `mask_corr`: mean correlation of two ops' mask logits (1: the "
    "same mask for every op). `–`: not applicable (no learned masks or no uncertainty head)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("results/runs"),
        help="pretraining runs (and their sweeps/ sub-folders) (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: tables/diagnostics.{md,csv} out (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> list[Path]:
    out = args.results / "tables" / "diagnostics"
    # Rows of runs whose folders are gone (a fresh checkout) are kept from the last table.
    table = keep_gone_runs(diagnostics_table(args.runs), out.with_suffix(".csv"), args.runs)
    if table.empty:
        raise FileNotFoundError(f"no finished pretraining runs under {args.runs}")
    return [
        atomic_write_text(
            out.with_suffix(".md"), f"## Training diagnostics\n\n{LEGEND}\n\n{markdown(table)}\n"
        ),
        atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False)),
    ]
