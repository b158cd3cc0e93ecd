"""How the augmentation subspaces relate: mask overlap of MAST checkpoints (``python -m analysis
masks CKPT...``).

For every checkpoint with masks (mast, mast_nounc, mast_fixed; a VICReg checkpoint is skipped with a
message: it has none) the masks are m = sigmoid(logits) for learned masks, or the stored 0/1 matrix
for fixed ones, and this writes to ``OUT/<label>/``:

* ``iou.png`` / ``iou.csv``: K x K IoU of the masks binarised at the threshold (a dimension belongs
  to op k when m_kj > 0.5). Convention for an empty union (0/0): 1 on the diagonal (a mask equals
  itself), 0 off it (two empty masks share no dimension).
* ``cosine.png`` / ``cosine.csv``: K x K cosine similarity of the continuous masks (same 0/0
  convention).
* ``unique_shared.png`` / ``unique_shared.csv``: per op, dimensions unique to it (above the
  threshold in its mask only) and shared (above it in its mask and in at least one other), stacked.
* ``density.png``: mask density (mean_j m_kj) per op against the step, from the run's ``log.jsonl``
  when the checkpoint sits in a run folder that has one.
* ``masks.json``: everything above as numbers, with the checkpoint's path, epoch, step and mask
  kind, and ``change_rho``: per op, Spearman's rho over dimensions between how much a dimension is
  meant to vary with the op (1 - m_kj; an AND assignment's a_kj) and how much it changes under pairs
  that differ in that op alone (``dimension_change``).

An AND assignment (``loss.combine: and``) has rows shared + the owning ops, each dimension's classes
summing to 1: its sets are disjoint by construction, so its IoU is 0 off the diagonal;
``change_rho`` is its check.

The label is the run folder's name (see ``analysis.curves.run_label``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.curves import (
    LOG_NAME,
    AnalysisInputError,
    read_log,
    run_label,
    step_rows,
    unique_label,
)
from analysis.figures import new_figure, save_figure
from core.checkpoints import load_checkpoint
from core.io import atomic_write_text
from core.methods import mask_kind

DEFAULT_OUT = Path("results/figures/masks")
THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# numbers
def mask_values(state: dict[str, Any]) -> torch.Tensor:
    """The K x d masks in [0, 1] of a suite checkpoint: sigmoid of the stored logits for learned
    masks, the stored 0/1 matrix for fixed ones. Call ``mask_skip_reason`` first: a checkpoint
    without masks fails here."""
    masks = state.get("masks")
    if masks is None:
        raise AnalysisInputError(mask_skip_reason(state) or "the checkpoint has no masks")
    kind = state.get("mask_kind") or mask_kind(state.get("method", "mast"))
    masks = masks.detach().float().cpu()
    if kind == "assign":  # AND: softmax over {shared, op_1..op_K'} per dimension
        return torch.softmax(masks, dim=0)
    return torch.sigmoid(masks) if kind == "learned" else masks


def is_assignment(state: dict[str, Any]) -> bool:
    """Whether the checkpoint's masks are an AND assignment (``assign``, ``assign_fixed``)."""
    return str(state.get("mask_kind", "")).startswith("assign")


def mask_rows(state: dict[str, Any]) -> list[str]:
    """Names of the rows of ``mask_values``: the K ops, or for an AND assignment shared + the owning
    ops."""
    ops = list(state.get("aug_names") or [])
    if not is_assignment(state):
        return ops
    base = ((state.get("config") or {}).get("views") or {}).get("base", ["crop"])
    return ["shared", *[op for op in ops if op not in base]]


def variant_scores(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """op -> [d]: how much each dimension is meant to vary with the op: its assignment a_kj to the
    op (AND), or 1 - m_kj, the op's mask leaving it out (OR). Shared and base ops have none under
    AND."""
    values = mask_values(state).numpy()
    rows = mask_rows(state)
    if is_assignment(state):
        return {op: values[k] for k, op in enumerate(rows) if op != "shared"}
    return {op: 1.0 - values[k] for k, op in enumerate(rows)}


@torch.no_grad()
def dimension_change(
    state: dict[str, Any], ops: list[str], n: int = 512, seed: int = 0, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """op -> [d]: each embedding dimension's mean squared change under pairs that differ in that op
    alone (``analysis.invariance.pair_params``, the run's own strengths), over twice its variance: 0
    for a dimension the op leaves alone, about 1 for one it redraws. The first ``n`` images of the
    run's data set."""
    from analysis.invariance import _generator, pair_params
    from analysis.uncertainty import rebuild
    from core.augment import render_views
    from core.data import build_dataset
    from core.data.transforms import to_float

    cfg, model = rebuild(state)
    images = build_dataset(cfg.data, part=cfg.data.part, progress=False)
    sources = [images[i][0] for i in range(min(n, len(images)))]
    height, width = sources[0].shape[-2:]

    def embed(params: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(sources), batch_size):
            views = render_views(
                sources[start : start + batch_size],
                params[start : start + batch_size],
                cfg.data.image_size,
            )
            out.append(model.expander(model.backbone(to_float(views))).double())
        return torch.cat(out)

    change = {}
    for op in ops:
        a, b = pair_params(
            op, _generator(seed, 1 + ops.index(op)), len(sources), height, width, cfg.augment
        )
        za, zb = embed(a), embed(b)
        spread = 0.5 * (za.var(0) + zb.var(0))
        change[op] = ((za - zb).pow(2).mean(0) / (2 * spread).clamp_min(1e-12)).numpy()
    return change


def change_correlation(state: dict[str, Any], n: int = 512, seed: int = 0) -> dict[str, float]:
    """op -> Spearman's rho over dimensions between ``variant_scores`` and ``dimension_change``:
    whether each op's dimensions are the ones that op actually changes (the subspace claim's
    check in docs/method.md; NaN for constant scores)."""
    from analysis.uncertainty import spearman

    scores = variant_scores(state)
    change = dimension_change(state, list(scores), n, seed)
    rhos = {op: spearman(score, change[op]) for op, score in scores.items()}
    return {op: float("nan") if rho is None else rho for op, rho in rhos.items()}


def mask_skip_reason(state: dict[str, Any]) -> str | None:
    """Why a checkpoint has no masks to analyse (None when it has them)."""
    if state.get("masks") is not None:
        return None
    return (
        f"method {state.get('method')!r} has no masks (only mast, mast_nounc and mast_fixed "
        "checkpoints have them)"
    )


def _pairwise_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with the 0/0 convention of this module: 1 on the diagonal, 0
    elsewhere."""
    out = np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0
    )
    empty_diagonal = np.diag(denominator) == 0
    out[np.diag_indices_from(out)] = np.where(empty_diagonal, 1.0, np.diag(out))
    return out


def mask_iou(binary: np.ndarray | torch.Tensor) -> np.ndarray:
    """K x K IoU of the sets of dimensions of boolean masks ``binary`` [K, d] (|A & B| / |A |
    B|)."""
    b = np.asarray(binary, dtype=bool).astype(float)
    inter = b @ b.T
    sizes = b.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return _pairwise_ratio(inter, union)


def mask_cosine(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """K x K cosine similarity of the rows of ``masks`` [K, d] (continuous values)."""
    m = np.asarray(masks, dtype=float)
    norms = np.linalg.norm(m, axis=1)
    return _pairwise_ratio(m @ m.T, norms[:, None] * norms[None, :])


def unique_shared_counts(
    masks: np.ndarray | torch.Tensor, threshold: float = THRESHOLD
) -> dict[str, Any]:
    """Per op (lists aligned with the rows of ``masks`` [K, d]): ``unique`` dimensions above
    ``threshold`` in that op's mask only, ``shared`` ones above it there and in at least one other
    mask; ``unused``: the number of dimensions in no mask."""
    above = np.asarray(masks, dtype=float) > threshold
    owners = above.sum(0)  # how many masks hold each dimension
    unique = (above & (owners == 1)).sum(1)
    shared = (above & (owners > 1)).sum(1)
    return {
        "unique": unique.tolist(),
        "shared": shared.tolist(),
        "unused": int((owners == 0).sum()),
    }


# ----------------------------------------------------------------------------------------------
# figures
def plot_matrix(
    matrix: np.ndarray, ops: list[str], title: str, value_name: str, path: Path
) -> Path:
    """An annotated K x K heatmap (values in the cells, op names on both axes, colorbar) in [0,
    1]."""
    size = 1.0 + 0.75 * len(ops)
    fig, ax = new_figure(size + 1.5, size)
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    for (row, col), value in np.ndenumerate(matrix):
        # dark text on the bright end of viridis, white on the dark end, so every number stays
        # legible
        ax.text(
            col,
            row,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize="small",
            color="black" if value > 0.6 else "white",
        )
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right")
    ax.set_yticks(range(len(ops)), ops)
    ax.set_xlabel("augmentation op")
    ax.set_ylabel("augmentation op")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=value_name)
    return save_figure(fig, path)


def plot_unique_shared(
    counts: dict[str, Any], ops: list[str], dim: int, title: str, path: Path
) -> Path:
    fig, ax = new_figure()
    x = np.arange(len(ops))
    ax.bar(x, counts["unique"], label="unique to the op")
    ax.bar(x, counts["shared"], bottom=counts["unique"], label="shared with other ops")
    ax.set_xticks(x, ops, rotation=30, ha="right")
    ax.set_xlabel("augmentation op")
    ax.set_ylabel(f"embedding dimensions (of {dim})")
    ax.set_title(title)
    totals = np.add(counts["unique"], counts["shared"])
    # head room so the legend never hides a bar
    ax.set_ylim(0, max(1, int(totals.max(initial=0))) * 1.25)
    ax.legend(loc="upper center", ncols=2)
    return save_figure(fig, path)


def density_series(
    rows: list[dict[str, Any]], ops: list[str], key: str = "mask_density"
) -> dict[str, tuple[list[int], list[float]]]:
    """op -> (steps, mask density) from the step rows of a log that logged ``key``
    (``mask_density``; an AND run's ``assign_share``, the share of the dimensions each op owns)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for op in ops:
        have = [row for row in rows if isinstance(row.get(key), dict) and op in row[key]]
        if have:
            out[op] = ([row["step"] for row in have], [row[key][op] for row in have])
    return out


def plot_density(curves: dict[str, tuple[list[int], list[float]]], title: str, path: Path) -> Path:
    fig, ax = new_figure()
    for op, (steps, values) in curves.items():
        ax.plot(steps, values, label=op)
    ax.set_xlabel("step")
    ax.set_ylabel("mask density (mean of m over dimensions)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# outputs
def matrix_csv(matrix: np.ndarray, ops: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["op", *ops])
    for op, row in zip(ops, matrix):
        writer.writerow([op, *(f"{value:.6f}" for value in row)])
    return buffer.getvalue()


def counts_csv(counts: dict[str, Any], ops: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["op", "unique", "shared", "total"])
    for op, unique, shared in zip(ops, counts["unique"], counts["shared"]):
        writer.writerow([op, unique, shared, unique + shared])
    return buffer.getvalue()


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or ``last.pt`` of a run folder; a one-line error naming the path
    otherwise."""
    if not path.exists():
        raise AnalysisInputError(
            f"{path}: not found; pass a suite checkpoint (.pt) or a pretraining run folder"
        )
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise AnalysisInputError(
                f"{path}: a folder without last.pt; pass a checkpoint file or the folder "
                "`python -m pretrain --out` wrote"
            )
        return path / "last.pt"
    return path


def _measured_change(path: Path, state: dict[str, Any], change_images: int) -> dict[str, float]:
    """``change_correlation`` where the checkpoint allows it, else {} with a note on stderr."""
    if not (state.get("expander") and state.get("config")):
        print(
            f"masks: {path}: no expander or config in the checkpoint; dimension change not "
            "measured",
            file=sys.stderr,
        )
    elif change_images > 0:
        try:
            return change_correlation(state, change_images)
        # the rest of the analysis stands
        except (
            FileNotFoundError,
            KeyError,
            ValueError,
            RuntimeError,
        ) as exc:
            print(f"masks: {path}: dimension change not measured ({exc})", file=sys.stderr)
    return {}


def _overlap_files(
    iou: np.ndarray,
    cosine: np.ndarray,
    counts: dict[str, Any],
    ops: list[str],
    dim: int,
    threshold: float,
    label: str,
    folder: Path,
) -> list[Path]:
    """The IoU, cosine and unique/shared figures and their CSV tables."""
    return [
        plot_matrix(
            iou, ops, f"Mask IoU (binarised at {threshold:g}): {label}", "IoU", folder / "iou.png"
        ),
        plot_matrix(
            cosine,
            ops,
            f"Mask cosine similarity: {label}",
            "cosine similarity",
            folder / "cosine.png",
        ),
        plot_unique_shared(
            counts,
            ops,
            dim,
            f"Unique and shared mask dimensions (> {threshold:g}): {label}",
            folder / "unique_shared.png",
        ),
        atomic_write_text(folder / "iou.csv", matrix_csv(iou, ops)),
        atomic_write_text(folder / "cosine.csv", matrix_csv(cosine, ops)),
        atomic_write_text(folder / "unique_shared.csv", counts_csv(counts, ops)),
    ]


def _density_files(
    path: Path, state: dict[str, Any], ops: list[str], label: str, folder: Path
) -> list[Path]:
    """density.png from the training log beside the checkpoint; none (and a note) without one."""
    log = path.parent / LOG_NAME
    key = "assign_share" if is_assignment(state) else "mask_density"
    curves = density_series(step_rows(read_log(log)), ops, key) if log.is_file() else {}
    if curves:
        return [
            plot_density(curves, f"Mask density over training: {label}", folder / "density.png")
        ]
    print(
        f"masks: {path}: no {LOG_NAME} with {key} beside it; density.png not written",
        file=sys.stderr,
    )
    return []


def analyse_checkpoint(
    path: Path,
    state: dict[str, Any],
    label: str,
    folder: Path,
    threshold: float,
    change_images: int = 512,
) -> list[Path]:
    """Every figure and table of one checkpoint with masks, written to ``folder``."""
    ops = mask_rows(state)
    masks = mask_values(state).numpy()
    ops = ops if len(ops) == len(masks) else [f"op{k}" for k in range(len(masks))]
    change_rho = _measured_change(path, state, change_images)
    iou, cosine = mask_iou(masks > threshold), mask_cosine(masks)
    counts = unique_shared_counts(masks, threshold)
    written = _overlap_files(iou, cosine, counts, ops, masks.shape[1], threshold, label, folder)
    written += _density_files(path, state, ops, label, folder)
    summary = {
        "checkpoint": str(path),
        "label": label,
        "method": state.get("method"),
        "mask_kind": state.get("mask_kind"),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "ops": ops,
        "dim": int(masks.shape[1]),
        "threshold": threshold,
        "density": dict(zip(ops, masks.mean(1).tolist())),
        "iou": iou.tolist(),
        "cosine": cosine.tolist(),
        "unique": dict(zip(ops, counts["unique"])),
        "shared": dict(zip(ops, counts["shared"])),
        "unused_dims": counts["unused"],
        "change_rho": change_rho,
        "change_images": change_images,
    }
    written.append(atomic_write_text(folder / "masks.json", json.dumps(summary, indent=2) + "\n"))
    return written


# -------------------------------------------------------------------------------------------------
# CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints",
        nargs="+",
        type=Path,
        metavar="CKPT",
        help="suite checkpoints (.pt) or pretraining run folders (their last.pt is used)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder; each checkpoint gets OUT/<label>/ (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"a dimension belongs to a mask when m > threshold (default: {THRESHOLD})",
    )
    parser.add_argument(
        "--change-images",
        type=int,
        default=512,
        help="images of the run's data set for the per-dimension change under single-op pairs "
        "(default: 512)",
    )


def each_checkpoint(paths: list[Path], command: str, skip_reason, analyse) -> list[Path]:
    """Load every checkpoint (a run folder means its last.pt), skip those ``skip_reason`` rejects
    with a message, and call ``analyse(path, state, label)`` with a label unique among them; returns
    the files written."""
    written: list[Path] = []
    labels: set[str] = set()
    for given in paths:
        path = resolve_checkpoint(given)
        state = load_checkpoint(path)
        reason = skip_reason(state)
        if reason:
            print(f"{command}: skipping {path}: {reason}", file=sys.stderr)
            continue
        label = unique_label(run_label(path), labels)
        labels.add(label)
        written += analyse(path, state, label)
    return written


def run(args: argparse.Namespace) -> list[Path]:
    return each_checkpoint(
        args.checkpoints,
        "masks",
        mask_skip_reason,
        lambda path, state, label: analyse_checkpoint(
            path, state, label, args.out / label, args.threshold, args.change_images
        ),
    )
