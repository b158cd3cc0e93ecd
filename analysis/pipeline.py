"""``python -m analysis all`` (``make analysis``): every analysis on the runs and records that
exist, then the report. Pretraining runs are the folders under ``--runs`` holding ``last.pt`` and
``config.yaml``; MAST runs get mask and uncertainty figures, every run its curves and an invariance
profile (beside a random-init backbone of the same architecture); sweep runs
(``--runs``/sweeps/<sweep>/<run>) get the mask figures only. A step whose inputs are missing is
skipped with a message, never fatal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import read_yaml
from core.methods import has_masks
from core.numerics import uses_head


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("results/runs"),
        help="folder whose sub-folders are pretraining runs (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: records/ in, tables/, figures/ and README.md out (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--n", type=int, default=512, help="images for the invariance and uncertainty analyses"
    )


def find_runs(root: Path) -> list[tuple[Path, dict]]:
    """(run folder, its resolved config) of every finished-or-started pretraining run directly under
    ``root``."""
    folders = sorted(
        p for p in root.glob("*") if (p / "last.pt").is_file() and (p / "config.yaml").is_file()
    )
    return [(folder, read_yaml(folder / "config.yaml")) for folder in folders]


def find_sweep_runs(root: Path) -> list[tuple[Path, dict]]:
    """``find_runs`` of every sweep folder ``root/sweeps/<sweep>/``."""
    return [
        run
        for sweep in sorted((root / "sweeps").glob("*"))
        if sweep.is_dir()
        for run in find_runs(sweep)
    ]


def _sub_args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"analysis {module.__name__}")
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _step(name: str, module, argv: list[str]) -> list[Path]:
    print(f"[analysis] {name}", flush=True)
    try:
        return module.run(_sub_args(module, argv))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"[analysis] {name} skipped: {exc}", file=sys.stderr)
        return []


def run(args: argparse.Namespace) -> list[Path]:
    from analysis import curves, diagnostics, invariance, masks, report, sweeps, tables, uncertainty

    results, figures = args.results, args.results / "figures"
    runs = find_runs(args.runs)
    written = _step(
        "tables", tables, ["--records", str(results / "records"), "--out", str(results / "tables")]
    )
    # the mask analysis only (cheap; the subspace sweeps' claims rest on it)
    swept = find_sweep_runs(args.runs)
    with_masks = [str(f / "last.pt") for f, cfg in [*runs, *swept] if has_masks(cfg.get("method"))]
    with_unc = [str(f) for f, cfg in runs if uses_head(cfg)]
    if with_masks:
        written += _step("masks", masks, [*with_masks, "--out", str(figures / "masks")])
    if with_unc:
        written += _step(
            "uncertainty",
            uncertainty,
            [*with_unc, "--out", str(figures / "uncertainty"), "--n", str(args.n)],
        )
    if runs:
        folders = [str(f) for f, _ in runs]
        written += _step(
            "curves", curves, [*folders, "--overlay", "--out", str(figures / "curves")]
        )
        archs = sorted({_arch_label(cfg) for _, cfg in runs})
        written += _step(
            "invariance",
            invariance,
            [
                *[str(f / "last.pt") for f, _ in runs],
                *[a for arch in archs for a in ("--random", arch)],
                "--n",
                str(args.n),
                "--object-scale",
                str(_object_scale(runs)),
                "--figure-dir",
                str(figures / "invariance"),
                "--table-dir",
                str(results / "tables"),
            ],
        )
    else:
        print(
            f"[analysis] no pretraining runs directly under {args.runs}: uncertainty, curves and "
            "invariance skipped"
        )
    written += _step(
        "diagnostics", diagnostics, ["--runs", str(args.runs), "--results", str(results)]
    )
    if (results / "study" / "index.json").is_file():
        written += _step("sweeps", sweeps, ["--results", str(results)])
    written += _step("report", report, ["--results", str(results), "--runs", str(args.runs)])
    return written


def _object_scale(runs: list[tuple[Path, dict]]) -> float:
    """The FactorShapes object scale the runs were trained on (their images are profiled); the first
    run's when they differ, with a warning."""
    scales = [float(cfg.get("data", {}).get("object_scale", 1.0)) for _, cfg in runs]
    if len(set(scales)) > 1:
        print(
            f"[analysis] runs trained on different object scales {sorted(set(scales))}: invariance "
            f"uses {scales[0]} (the first run's)",
            file=sys.stderr,
        )
    return scales[0]


def _arch_label(cfg: dict) -> str:
    model = cfg.get("model", {})
    return f"{model.get('arch', 'resnet18')}w{model.get('base_width', 64)}"
