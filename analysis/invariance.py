"""Invariance profile: how much each augmentation op moves a backbone's pooled features.

For every op k, image pairs are rendered that differ *only* in op k (all other parameters shared, op
k forced to really differ), and their features' mean cosine similarity ``cos_k`` is compared with
that of random pairs (two different images, identical parameters), ``cos_random``::

    invariance_k = (cos_k - cos_random) / (1 - cos_random)

1 means the op changes the features as little as doing nothing, 0 as much as swapping the image
(negative: more). Degenerate case: when ``1 - cos_random`` is ~0 the features do not depend on the
image (e.g. a constant-output backbone); such a backbone is invariant to everything, so an op that
leaves the features unchanged too scores 1 (an op that moves features the image cannot move has no
defined score: NaN).

``python -m analysis invariance CKPT ... [--random resnet18w16]`` writes one table (rows: backbones,
columns: ops, plus the raw mean cosines) and one grouped bar chart.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from analysis.figures import new_figure, save_figure
from core import markdown
from core.augment import (
    OPS,
    PARAM_SLICES,
    AugmentConfig,
    render_views,
    sample_op,
    sample_params,
    with_ops_from,
)
from core.backbones import parse_arch
from core.data.transforms import to_float
from core.logs import progress_bar

log = logging.getLogger("analysis.invariance")

#: Ops whose parameter is one 0/1 flag: a differing pair has it applied in one view and not in the
#: other.
BINARY_OPS = ("flip", "grayscale", "solarize")
#: Below this, ``1 - cos_random`` (or ``1 - cos_k``) counts as zero: features do not move at all.
DEGENERATE_EPS = 1e-6
#: Draws allowed to find a differing op before the config is declared unable to produce one.
MAX_DRAWS = 100
DEFAULT_FIGURE_DIR = Path("results/figures/invariance")
DEFAULT_TABLE_DIR = Path("results/tables")
Y_LABEL = "invariance (1 = unchanged by the op)"


# ------------------------------------------------------------------------------------------------
# pairs
def _always_applied(cfg: AugmentConfig) -> AugmentConfig:
    """``cfg`` with every op enabled and jitter and blur always applied (for drawing the op under
    test)."""
    return dataclasses.replace(cfg, ops=list(OPS), jitter_p=1.0, blur_p=(1.0, 1.0))


def _differing_parts(
    op: str,
    cfg: AugmentConfig,
    generator: torch.Generator,
    height: int,
    width: int,
    base: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two parameter parts of ``op`` that surely render differently; ``base`` is view a's sampled
    part."""
    if op in BINARY_OPS:
        return base, 1.0 - base  # one view applies it, the other does not
    forced = _always_applied(cfg)
    # Colour jitter and blur must be applied in both views (with different factors / sigmas); crop
    # always is.
    first = base if op == "crop" else sample_op(forced, generator, op, 0, height, width)
    for _ in range(MAX_DRAWS):
        second = sample_op(forced, generator, op, 0, height, width)
        if not torch.equal(first, second):
            return first, second
    raise ValueError(
        f"the augment config cannot produce two different '{op}' parameters "
        f"({MAX_DRAWS} draws were identical); widen its range"
    )


def pair_params(
    op: str,
    generator: torch.Generator,
    n: int,
    height: int,
    width: int,
    cfg: AugmentConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` parameter pairs ``(a, b)`` [n, P] that differ in ``op`` only, and surely in it.

    ``a`` is a view drawn from ``cfg`` (VICReg's by default); ``b`` takes ``a`` and replaces op's
    part.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    cfg = cfg or AugmentConfig()
    a = torch.stack([sample_params(cfg, generator, 0, height, width) for _ in range(n)])
    other = a.clone()
    for i in range(n):
        a[i, PARAM_SLICES[op]], other[i, PARAM_SLICES[op]] = _differing_parts(
            op, cfg, generator, height, width, a[i, PARAM_SLICES[op]].clone()
        )
    return a, with_ops_from(a, other, [op])


def random_partners(generator: torch.Generator, n: int) -> torch.Tensor:
    """``partner[i] != i`` for every i (n >= 2): a random cyclic derangement, so each image is used
    once."""
    if n < 2:
        raise ValueError(f"random pairs need at least 2 images, got {n}")
    order = torch.randperm(n, generator=generator)
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


# ------------------------------------------------------------------------------------------------
# scores
def cosine_pairs(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity [N] (float64). Two zero vectors are identical (1); one zero
    vector: 0."""
    a, b = features_a.flatten(1).double(), features_b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = (a * b).sum(1) / norms.clamp_min(torch.finfo(torch.float64).tiny)
    both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    return torch.where(both_zero, torch.ones_like(cos), cos.clamp(-1.0, 1.0))


def invariance_scores(cos_by_op: dict[str, float], cos_random: float) -> dict[str, float]:
    """``{op: (cos_k - cos_random) / (1 - cos_random)}``; the degenerate case is handled as the
    module says."""
    spread = 1.0 - float(cos_random)
    if spread > DEGENERATE_EPS:
        return {op: (float(cos) - float(cos_random)) / spread for op, cos in cos_by_op.items()}
    # Features ignore the image: an op that also leaves them unchanged is (trivially) fully
    # invariant.
    return {
        op: 1.0 if 1.0 - float(cos) <= DEGENERATE_EPS else math.nan for op, cos in cos_by_op.items()
    }


# ----------------------------------------------------------------------------------------------
# features
def _generator(seed: int, stream: int) -> torch.Generator:
    """One generator per (seed, op): adding or dropping an op never changes the other ops' pairs."""
    return torch.Generator().manual_seed(seed * (len(OPS) + 1) + stream)


@torch.no_grad()
def _features(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    params: torch.Tensor,
    out_size: int,
    batch_size: int,
    device: torch.device,
    bar,
) -> torch.Tensor:
    """Pooled features [N, D] (float32, CPU) of ``images[i]`` rendered with ``params[i]``."""
    out = []
    for start in range(0, len(images), batch_size):
        views = render_views(
            images[start : start + batch_size], params[start : start + batch_size], out_size
        )
        out.append(model(to_float(views.to(device))).float().flatten(1).cpu())
        bar.update(len(views))
    return torch.cat(out)


def profile(
    backbone_module: torch.nn.Module,
    images: Sequence[torch.Tensor] | torch.Tensor,
    ops: Sequence[str] = OPS,
    cfg: AugmentConfig | None = None,
    seed: int = 0,
    out_size: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    desc: str = "invariance",
) -> dict:
    """The invariance profile of a module mapping normalised float [N, 3, S, S] to [N, D].

    ``images``: uint8 [3, H, W] each (all the same size, used for drawing crop boxes). Returns
    ``{"invariance": {op: score}, "cos": {op: mean cosine}, "cos_random": float, "n": N}``.
    """
    n = len(images)
    height, width = images[0].shape[-2:]
    out_size = out_size or int(height)
    device = torch.device(device)
    model = backbone_module.to(device).eval()
    bar = progress_bar(2 * n * (len(ops) + 1), desc=desc)
    try:
        # Random pairs: the same parameters on two different images, so only the image differs.
        rand = _generator(seed, 0)
        params = torch.stack(
            [sample_params(cfg or AugmentConfig(), rand, 0, height, width) for _ in range(n)]
        )
        partner = random_partners(rand, n)

        def features_of(imgs, p):
            return _features(model, imgs, p, out_size, batch_size, device, bar)

        partners = [images[j] for j in partner.tolist()]
        cos_random = cosine_pairs(features_of(images, params), features_of(partners, params))
        cos = {}
        for op in ops:
            a, b = pair_params(op, _generator(seed, 1 + OPS.index(op)), n, height, width, cfg)
            cos[op] = cosine_pairs(features_of(images, a), features_of(images, b)).mean().item()
    finally:
        bar.close()
    cos_random = cos_random.mean().item()
    return {
        "invariance": invariance_scores(cos, cos_random),
        "cos": cos,
        "cos_random": cos_random,
        "n": n,
    }


# --------------------------------------------------------------------------------------------
# backbones
def checkpoint_label(path: str | Path) -> str:
    """``run_folder`` for ``run_folder/last.pt``, ``run_folder@epoch_8`` for an epoch file, else the
    stem."""
    path = Path(path)
    if path.stem == "last":
        return path.parent.name or path.stem
    if re.fullmatch(r"epoch_\d+", path.stem):
        return f"{path.parent.name}@{path.stem}"
    return path.stem


def _unique(labels: list[str]) -> list[str]:
    """Suffix repeated labels (two runs' ``last.pt`` in equally named folders) so table rows stay
    distinct."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _load_images(args: argparse.Namespace) -> list[torch.Tensor]:
    """The first ``n`` images of the configured FactorShapes part (uint8 [3, S, S])."""
    from core.config import DataConfig
    from core.data import build_dataset

    dataset = build_dataset(
        DataConfig(
            split=args.split,
            image_size=args.image_size,
            root=args.data_root,
            object_scale=args.object_scale,
        ),
        part=args.part,
    )
    if args.n > len(dataset):
        raise ValueError(
            f"--n {args.n} is more than the {len(dataset)} images of {args.split}/{args.part}"
        )
    return [dataset[i][0] for i in range(args.n)]


def _backbones(args: argparse.Namespace):
    """(label, Backbone) for every checkpoint, then every random-init reference; each loaded on
    demand."""
    from core.checkpoints import CheckpointError, load_backbone, random_backbone

    missing = [str(p) for p in args.checkpoints if not Path(p).is_file()]
    # before any work, one line naming every missing file (a ValueError, as the CLIs expect)
    if missing:
        raise CheckpointError(f"checkpoint(s) not found: {', '.join(missing)}")
    for arch in args.random:
        try:  # a typo fails now, not after the first backbones have run
            parse_arch(arch)
        except ValueError as exc:
            raise ValueError(f"--random: {exc}") from None
    labels = _unique(
        [checkpoint_label(p) for p in args.checkpoints] + [f"random-init {a}" for a in args.random]
    )
    loaders = [lambda p=p: load_backbone(p, args.format) for p in args.checkpoints]
    loaders += [lambda a=a: random_backbone(*parse_arch(a), args.seed) for a in args.random]
    return list(zip(labels, loaders))


# -----------------------------------------------------------------------------------------------
# outputs
def table_rows(results: list[dict], ops: Sequence[str]) -> list[dict]:
    """One flat row per backbone: label, what it is, invariance per op, raw cosines."""
    rows = []
    for r in results:
        row = {
            "label": r["label"],
            "method": r["method"],
            "arch": r["arch"],
            "checkpoint": r["checkpoint"],
        }
        row |= {op: r["invariance"][op] for op in ops}
        row |= {f"cos_{op}": r["cos"][op] for op in ops} | {"cos_random": r["cos_random"]}
        rows.append(row | {"n": r["n"], "seed": r["seed"]})
    return rows


def _markdown(rows: list[dict], columns: Sequence[str], first: str = "label") -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cells = [[str(r[first]), *(cell(r[c]) for c in columns)] for r in rows]
    return "\n".join(markdown.table([first, *columns], cells))


def write_tables(
    rows: list[dict], ops: Sequence[str], table_dir: Path, provenance: str
) -> list[Path]:
    """``invariance.md`` (scores, then raw mean cosines) and ``invariance.csv`` (every column)."""
    from core.io import atomic_write_text

    text = (
        f"# Invariance profile\n\n{provenance}\n\ninvariance = (cos_op - cos_random) / (1 - "
        "cos_random): 1 = the op changes the pooled features as little as doing nothing, 0 = as "
        f"much as swapping the image.\n\n{_markdown(rows, list(ops))}\n\n## Mean cosine similarity "
        f"of the pairs\n\n{_markdown(rows, [f'cos_{op}' for op in ops] + ['cos_random'])}\n"
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return [
        atomic_write_text(table_dir / "invariance.md", text),
        atomic_write_text(table_dir / "invariance.csv", buffer.getvalue()),
    ]


def plot_profile(rows: list[dict], ops: Sequence[str], path: Path, subtitle: str = "") -> Path:
    """Grouped bars: x = op, one bar per backbone."""
    fig, ax = new_figure(width=min(14.0, max(6.4, 3.5 + len(ops) * (0.6 + 0.2 * len(rows)))))
    width = 0.8 / len(rows)
    for k, row in enumerate(rows):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(ops))]
        ax.bar(xs, [row[op] for op in ops], width=width, label=row["label"])
    ax.set_xticks(range(len(ops)), list(ops))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("augmentation op")
    ax.set_ylabel(Y_LABEL)
    ax.set_title("Invariance profile" + (f" ({subtitle})" if subtitle else ""))
    lowest = min(0.0, *(row[op] for row in rows for op in ops if math.isfinite(row[op])))
    ax.set_ylim(lowest - 0.05, 1.05)
    # outside: bars reach 1
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints",
        nargs="*",
        metavar="CKPT",
        help="backbones to profile: suite checkpoints or any external checkpoint the importer "
        "accepts",
    )
    parser.add_argument(
        "--random",
        action="append",
        default=[],
        metavar="ARCH",
        help="also profile a random-init backbone as a reference, e.g. resnet18w16 (repeatable)",
    )
    parser.add_argument(
        "--format", default="auto", help="checkpoint layout for the importer (default: auto)"
    )
    parser.add_argument(
        "--ops", nargs="+", default=list(OPS), choices=OPS, help="ops to profile (default: all)"
    )
    parser.add_argument("--n", type=int, default=512, help="images (pairs per op) (default: 512)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the pairs and random-init references"
    )
    parser.add_argument(
        "--split", default="cls-upright", help="FactorShapes split (default: cls-upright)"
    )
    parser.add_argument("--part", default="test", help="part of the split (default: test)")
    parser.add_argument(
        "--image-size", type=int, default=64, help="image side in pixels (default: 64)"
    )
    parser.add_argument(
        "--object-scale",
        type=float,
        default=1.0,
        help="FactorShapes object size multiplier of the images (default: 1; the embedded configs: "
        "1.25)",
    )
    parser.add_argument(
        "--data-root", default=None, help="FactorShapes cache folder (default: the shared cache)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--figure-dir",
        type=Path,
        default=DEFAULT_FIGURE_DIR,
        help=f"where the bar chart goes (default: {DEFAULT_FIGURE_DIR})",
    )
    parser.add_argument(
        "--table-dir",
        type=Path,
        default=DEFAULT_TABLE_DIR,
        help=f"where invariance.md/.csv go (default: {DEFAULT_TABLE_DIR})",
    )


def run(args: argparse.Namespace) -> list[Path]:
    from core.cli import git_commit
    from core.device import select_device

    if not args.checkpoints and not args.random:
        raise ValueError("nothing to profile: give checkpoint paths and/or --random ARCH")
    if args.n < 2:
        raise ValueError(f"--n must be at least 2 (random pairs need two images), got {args.n}")
    backbones = _backbones(args)  # fails on a missing checkpoint before the data set is built
    device = select_device(args.device)
    images = _load_images(args)
    results = []
    for label, load in backbones:
        backbone = load()
        found = profile(
            backbone.model,
            images,
            args.ops,
            seed=args.seed,
            batch_size=args.batch_size,
            device=device,
            desc=f"invariance {label}",
        )
        log.info(
            "%s: %s", label, ", ".join(f"{op} {s:.3f}" for op, s in found["invariance"].items())
        )
        results.append(
            found
            | {
                "label": label,
                "method": backbone.method,
                "arch": backbone.arch_label,
                "checkpoint": str(backbone.ckpt or ""),
                "seed": args.seed,
            }
        )
    rows = table_rows(results, args.ops)
    provenance = (
        f"FactorShapes {args.split}/{args.part}, {args.image_size} px, n = {args.n} pairs per op, "
        f"seed {args.seed}, VICReg augment strengths, commit {git_commit()}."
    )
    written = write_tables(rows, args.ops, args.table_dir, provenance)
    subtitle = f"{args.split}/{args.part}, n={args.n}, seed {args.seed}"
    written.append(
        plot_profile(rows, args.ops, args.figure_dir / "invariance_profile.png", subtitle)
    )
    return written
