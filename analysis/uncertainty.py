"""Uncertainty versus difficulty (``python -m analysis uncertainty RUN...``).

For a MAST run with an uncertainty head (mast, mast_fixed; vicreg and mast_nounc have none and are
skipped with a message) this evaluates the checkpoint, it does not train:

1. rebuild the network from the checkpoint (``core.model.model_from_checkpoint``; backbone and
   uncertainty head weights, eval mode, so BatchNorm uses its running statistics);
2. render views of the first ``--n`` images of the run's own data set (``data`` of its config, the
   part pretraining read) with the run's own view maker (``augment`` and ``views`` of its config);
   view parameters come from ``core.seeding.sample_generator(--seed, 0, index)``, the same recipe
   training uses;
3. per sample i and op k: the pair variance s_ik = (sigma^2_ik + sigma'^2_ik) / 2 with log sigma^2
   from the head clamped to [-6, 6], as ``pretrain.losses.mast`` defines it, and the difference
   strength d_ik of the pair subspace k compares (``core.views.pair_strengths``).

Binary ops (flip, grayscale, solarize; d in {0, 1}) get two bins; continuous ops (crop,
color_jitter, blur) get d = 0 as its own bin plus ``--bins`` equal-width bins over (0, 1].
Spearman's rho is computed over the samples (not the bin means). Written to ``OUT/<run label>/``:

* ``uncertainty_vs_strength.png``: per op, mean s by strength bin (log scale; legend: op, rho,
  samples);
* ``uncertainty_per_epoch.png``: per op, the mean over each epoch of the logged ``uncertainty`` (the
  batch mean of s at each logged step), epochs numbered from 1 like ``masks/epoch_0001.pt``;
* ``uncertainty_bins.csv``: op, bin, low, high, count, mean s, rho; ``uncertainty.json``: the same
  plus the per-epoch means and what was evaluated (checkpoint, images, seed), and ``per_view``: the
  same summary of each view's own sigma^2 against what that view alone can know, its own distortion
  strength (the difference of its parameters from the neutral ones, ``own_strengths``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from scipy import stats

from analysis.curves import LOG_NAME, AnalysisInputError, read_log, step_rows
from analysis.figures import new_figure, save_figure
from analysis.masks import each_checkpoint
from core.augment import AugmentConfig, neutral_params
from core.config import PretrainDataConfig, from_dict
from core.data import build_dataset
from core.data.transforms import to_float
from core.io import atomic_write_text
from core.logs import progress
from core.model import model_from_checkpoint
from core.seeding import sample_generator
from core.views import ViewMaker, ViewsConfig, difference_strength, pair_strengths

DEFAULT_OUT = Path("results/figures/uncertainty")
BINARY_OPS = ("flip", "grayscale", "solarize")
# the clamp of pretrain.losses.mast.LOG_VAR_RANGE (checked in the tests)
LOG_VAR_RANGE = (
    -6.0,
    6.0,
)


# ---------------------------------------------------------------------------------------------
# numbers
def pair_variance(log_var: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """s_ik = (sigma^2 + sigma'^2) / 2 of the two views op k compares: ``log_var`` [V, B, K] (head
    output, clamped here as the loss clamps it), ``pairs`` [K, 2] view indices -> [B, K]."""
    var = log_var.clamp(*LOG_VAR_RANGE).exp()
    ops = torch.arange(len(pairs))
    return (var[pairs[:, 0], :, ops] + var[pairs[:, 1], :, ops]).T / 2


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho of two samples; None where it is undefined (fewer than 2 samples, a constant
    input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def bin_edges(binary: bool, n_bins: int) -> list[tuple[float, float]]:
    """(low, high) of each bin: {0} and {1} for a binary op; {0} then (j/n, (j+1)/n] for a
    continuous one."""
    if binary:
        return [(0.0, 0.0), (1.0, 1.0)]
    return [(0.0, 0.0)] + [(j / n_bins, (j + 1) / n_bins) for j in range(n_bins)]


def bin_of(strength: np.ndarray, binary: bool, n_bins: int) -> np.ndarray:
    """The index into ``bin_edges`` of every strength value in [0, 1]."""
    d = np.clip(np.asarray(strength, dtype=float), 0.0, 1.0)
    if binary:
        return (d >= 0.5).astype(int)
    # d = 0 is bin 0; (j/n, (j+1)/n] is bin j + 1, hence the ceiling
    return np.where(d == 0, 0, np.ceil(d * n_bins).clip(1, n_bins)).astype(int)


def summarize_op(
    strength: np.ndarray, uncertainty: np.ndarray, binary: bool, n_bins: int = 5
) -> dict[str, Any]:
    """Mean uncertainty per strength bin and Spearman's rho (over samples) of one op
    (JSON-ready)."""
    strength, uncertainty = np.asarray(strength, dtype=float), np.asarray(uncertainty, dtype=float)
    index = bin_of(strength, binary, n_bins)
    bins = []
    for j, (low, high) in enumerate(bin_edges(binary, n_bins)):
        chosen = uncertainty[index == j]
        bins.append(
            {
                "low": low,
                "high": high,
                "centre": (low + high) / 2,
                "count": int(len(chosen)),
                "mean_uncertainty": float(chosen.mean()) if len(chosen) else None,
            }
        )
    return {
        "kind": "binary" if binary else "continuous",
        "n": int(len(strength)),
        "spearman_rho": spearman(strength, uncertainty),
        "bins": bins,
    }


def epoch_means(
    rows: list[dict[str, Any]], key: str = "uncertainty"
) -> dict[str, dict[int, float]]:
    """op -> {epoch: mean of the per-op values ``key`` over that epoch's logged steps}. Epochs count
    from 1 (the log's ``epoch`` field of a step counts from 0)."""
    sums: dict[str, dict[int, list[float]]] = {}
    for row in step_rows(rows):
        values = row.get(key)
        if not isinstance(values, dict) or "epoch" not in row:
            continue
        for op, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                sums.setdefault(op, {}).setdefault(int(row["epoch"]) + 1, []).append(float(value))
    return {
        op: {epoch: float(np.mean(v)) for epoch, v in sorted(per.items())}
        for op, per in sums.items()
    }


# -------------------------------------------------------------------------------------- model
# evaluation
def uncertainty_skip_reason(state: dict[str, Any]) -> str | None:
    """Why a checkpoint has no uncertainty to analyse (None when it has an uncertainty head)."""
    if state.get("uncertainty_head") is not None:
        return None
    return (
        f"method {state.get('method')!r} has no uncertainty head (only mast and mast_fixed "
        "checkpoints have one)"
    )


def rebuild(state: dict[str, Any]):
    """(the run's augment, views and data settings, its network in eval mode) of a suite
    checkpoint (``core.model.model_from_checkpoint``)."""
    config = state["config"]
    cfg = types.SimpleNamespace(
        augment=from_dict(AugmentConfig, config["augment"]),
        views=from_dict(ViewsConfig, config["views"]),
        data=from_dict(PretrainDataConfig, config["data"]),
    )
    return cfg, model_from_checkpoint(state)


def own_strengths(params: torch.Tensor, cfg, ops: list[str]) -> torch.Tensor:
    """What one view can know of its own distortion: per op, the difference strength of the view's
    parameters ``params`` [..., P] from the neutral ones (crop 1 - the box's area, colour jitter the
    mean factor offset, blur sigma / max, binary ops applied): [..., K]."""

    neutral = neutral_params().to(params.dtype).expand_as(params)
    return difference_strength(params, neutral, cfg, ops)


@torch.no_grad()
def evaluate_pairs(
    state: dict[str, Any],
    n: int,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
    per_view: bool = False,
) -> tuple[np.ndarray, ...]:
    """(d [N, K], s [N, K]) over the first ``n`` images of the run's data set (see the module
    docstring); with ``per_view`` also (own [N V, K], sigma^2 [N V, K]): each view's own distortion
    strength (``own_strengths``) and the head's variance for that view alone."""

    cfg, model = rebuild(state)
    model.to(device)
    maker = ViewMaker(cfg.augment, cfg.views, cfg.data.image_size)
    if maker.ops != list(state["aug_names"]):
        raise AnalysisInputError(
            f"the checkpoint's ops {state['aug_names']} differ from those its config gives "
            f"{maker.ops}; was the config edited after training?"
        )
    images = build_dataset(cfg.data, part=cfg.data.part, progress=False)
    count, pairs = min(n, len(images)), maker.pairs()
    strengths, variances, own, sigma2 = [], [], [], []
    for start in progress(
        range(0, count, batch_size), desc="uncertainty", total=math.ceil(count / batch_size)
    ):
        index = range(start, min(start + batch_size, count))
        views, params = maker.batch(
            [images[i][0] for i in index], [sample_generator(seed, 0, i) for i in index]
        )
        log_var = (
            torch.stack(
                [
                    model.uncertainty_head(model.backbone(to_float(views[:, v]).to(device)))
                    for v in range(views.shape[1])
                ]
            )
            .float()
            .cpu()
        )
        strengths.append(pair_strengths(params.float(), pairs, cfg.augment, maker.ops))
        variances.append(pair_variance(log_var, pairs))
        own.append(own_strengths(params.float(), cfg.augment, maker.ops).flatten(0, 1))  # [B V, K]
        sigma2.append(log_var.clamp(*LOG_VAR_RANGE).exp().transpose(0, 1).flatten(0, 1))
    pair = (torch.cat(strengths).numpy(), torch.cat(variances).numpy())
    return (*pair, torch.cat(own).numpy(), torch.cat(sigma2).numpy()) if per_view else pair


# ----------------------------------------------------------------------------------------------
# figures
def plot_strength_bins(summaries: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    fig, ax = new_figure(7.0, 4.5)
    for op, summary in summaries.items():
        filled = [b for b in summary["bins"] if b["count"]]
        rho = summary["spearman_rho"]
        rho_text = "n/a" if rho is None else f"{rho:+.2f}"
        ax.plot(
            [b["centre"] for b in filled],
            [b["mean_uncertainty"] for b in filled],
            marker="o",
            label=f"{op} (rho = {rho_text}, n = {summary['n']})",
        )
    ax.set_yscale("log")  # s = exp(log sigma^2) spans orders of magnitude across ops
    ax.set_xlabel("difference strength d of the pair (bin centre)")
    ax.set_ylabel("mean pair variance s (uncertainty)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_epoch_means(means: dict[str, dict[int, float]], title: str, path: Path) -> Path:
    fig, ax = new_figure()
    for op, per_epoch in means.items():
        ax.plot(list(per_epoch), list(per_epoch.values()), marker="o", label=op)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean pair variance s (uncertainty)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def bins_csv(summaries: dict[str, dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["op", "kind", "bin", "low", "high", "count", "mean_uncertainty", "spearman_rho"]
    )
    for op, summary in summaries.items():
        rho = summary["spearman_rho"]
        for j, b in enumerate(summary["bins"]):
            mean = b["mean_uncertainty"]
            writer.writerow(
                [
                    op,
                    summary["kind"],
                    j,
                    b["low"],
                    b["high"],
                    b["count"],
                    "" if mean is None else f"{mean:.6g}",
                    "" if rho is None else f"{rho:.6f}",
                ]
            )
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------------
# CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="pretraining run folders (last.pt and log.jsonl are used) or suite checkpoints",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder; each run gets OUT/<run label>/ (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--n", type=int, default=1024, help="images to evaluate (default: 1024)")
    parser.add_argument(
        "--bins",
        type=int,
        default=5,
        help="equal-width bins over (0, 1] for continuous ops, besides d = 0 (default: 5)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the view parameters (default: 0)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per forward pass (default: 128)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)"
    )


def analyse_run(
    path: Path, state: dict[str, Any], label: str, folder: Path, args: argparse.Namespace
) -> list[Path]:
    from core.device import select_device

    ops = list(state["aug_names"])
    d, s, own, sigma2 = evaluate_pairs(
        state, args.n, args.seed, args.batch_size, str(select_device(args.device)), per_view=True
    )
    summaries = {
        op: summarize_op(d[:, k], s[:, k], op in BINARY_OPS, args.bins) for k, op in enumerate(ops)
    }
    # What one view can know: its own sigma^2 against its own distortion, beside the pair's
    # difference.
    views = {
        op: summarize_op(own[:, k], sigma2[:, k], op in BINARY_OPS, args.bins)
        for k, op in enumerate(ops)
    }
    written = [
        plot_strength_bins(
            summaries,
            f"Uncertainty by difference strength: {label}",
            folder / "uncertainty_vs_strength.png",
        ),
        atomic_write_text(folder / "uncertainty_bins.csv", bins_csv(summaries)),
    ]
    log = path.parent / LOG_NAME
    means = epoch_means(read_log(log)) if log.is_file() else {}
    if means:
        written.append(
            plot_epoch_means(
                means, f"Mean uncertainty per epoch: {label}", folder / "uncertainty_per_epoch.png"
            )
        )
    else:
        print(
            f"uncertainty: {path}: no {LOG_NAME} with per-op uncertainty beside it; "
            "uncertainty_per_epoch.png not written",
            file=sys.stderr,
        )
    summary = {
        "checkpoint": str(path),
        "label": label,
        "method": state.get("method"),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "n_images": int(len(d)),
        "seed": args.seed,
        "ops": ops,
        "per_op": summaries,
        "per_view": views,
        "per_epoch": {op: {str(e): v for e, v in per.items()} for op, per in means.items()},
    }
    written.append(
        atomic_write_text(folder / "uncertainty.json", json.dumps(summary, indent=2) + "\n")
    )
    return written


def run(args: argparse.Namespace) -> list[Path]:
    if args.n < 1 or args.bins < 1 or args.batch_size < 1:
        raise AnalysisInputError(
            f"--n, --bins and --batch-size must be positive; got {args.n}, {args.bins}, "
            f"{args.batch_size}"
        )
    return each_checkpoint(
        args.runs,
        "uncertainty",
        uncertainty_skip_reason,
        lambda path, state, label: analyse_run(path, state, label, args.out / label, args),
    )
