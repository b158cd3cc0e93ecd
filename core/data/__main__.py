"""Data commands.

python -m core.data prepare [--config F] [--set k=v ...] --out DIR
    generate the FactorShapes splits into the data cache (idempotent; --force regenerates) and write
    DIR/summary.json with each part's size, folder and generation time.
python -m core.data check --set data.dataset=folder data.root=PATH [data.verify_images=true] --out
DIR
    open any configured data set, decode its images once, and report counts, labels and skipped
    files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from core.cli import add_common_args, config_from_args, prepare_out_dir
from core.config import DataConfig
from core.data import DataError, build_dataset, default_data_root
from core.io import atomic_write_text
from core.logs import progress, setup_logging

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass
class PrepareConfig:
    """Which FactorShapes parts to generate (defaults: every split at its documented size)."""

    #: Generator seed (the same images for every run that uses it).
    generator_seed: int = 0
    #: Cache folder (default: $MAST_DATA_CACHE or ~/.cache/mast-suite/data).
    root: str | None = None
    splits: list[str] = dataclasses.field(
        default_factory=lambda: ["pretrain", "cls-upright", "cls-rot", "det", "det-upright"]
    )
    #: Images per part for every split (null: each part's default, e.g. 10,000 for pretrain).
    n: int | None = None
    #: Generator processes (null: up to 4).
    workers: int | None = None
    #: Object size multiplier of the single-object splits (pretrain, cls-*), as the embedded configs
    #: use it (docs/defaults.md); the det splits keep their own sizes.
    object_scale: float = 1.25


@dataclasses.dataclass
class CheckConfig:
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    parts: list[str] = dataclasses.field(default_factory=lambda: ["train"])


def prepare(cfg: PrepareConfig, force: bool = False) -> list[dict]:
    from core.data import factorshapes as fs

    unknown = [s for s in cfg.splits if s not in fs.SPLITS]
    if unknown:
        raise DataError(f"unknown FactorShapes split(s) {unknown}; valid: {', '.join(fs.SPLITS)}")
    root = Path(cfg.root).expanduser() if cfg.root else default_data_root()
    rows = []
    for split in cfg.splits:
        for part in fs.PARTS[split]:
            scale = 1.0 if split in fs.DET_SPLITS else cfg.object_scale
            kwargs: dict[str, Any] = dict(
                root=root,
                split=split,
                part=part,
                n=cfg.n,
                seed=cfg.generator_seed,
                workers=cfg.workers,
                object_scale=scale,
            )
            if force:
                shutil.rmtree(
                    fs.cache_dir(
                        root, split, part, n=cfg.n, seed=cfg.generator_seed, object_scale=scale
                    ),
                    ignore_errors=True,
                )
            t0 = time.perf_counter()
            folder = fs.ensure_split(**kwargs)
            meta = json.loads((folder / "meta.json").read_text())
            rows.append(
                {
                    "split": split,
                    "part": part,
                    "n": meta["n"],
                    "image_size": meta["image_size"],
                    "folder": str(folder),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            print(
                f"{split}/{part}: {meta['n']} images at {meta['image_size']} px in "
                f"{rows[-1]['seconds']} s -> {folder}"
            )
    return rows


def check(cfg: CheckConfig) -> list[dict]:
    rows = []
    for part in cfg.parts:
        dataset = build_dataset(cfg.data, part=part)
        sizes: set[tuple[int, ...]] = set()
        counts: dict[str, dict[int, int]] = {}
        # iterable through __getitem__ (the sequence protocol), which the type system does not see
        samples = cast("Iterable[tuple[torch.Tensor, dict[str, int]]]", dataset)
        for image, target in progress(samples, desc=f"check {part}", total=len(dataset)):
            sizes.add(tuple(image.shape))
            for name, value in target.items():
                counts.setdefault(name, {}).setdefault(int(value), 0)
                counts[name][int(value)] += 1
        rows.append(
            {
                "part": part,
                "images": len(dataset),
                "skipped": getattr(dataset, "n_skipped", 0),
                "label_names": dataset.label_names,
                "label_counts": counts,
                "shapes": sorted(sizes)[:5],
                "distinct_shapes": len(sizes),
            }
        )
        print(json.dumps(rows[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(
        prog="python -m core.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_prepare = sub.add_parser("prepare", help="generate FactorShapes into the data cache")
    add_common_args(p_prepare, PrepareConfig, default_out="results/runs/data")
    p_prepare.add_argument(
        "--force", action="store_true", help="delete and regenerate cached parts"
    )
    p_check = sub.add_parser("check", help="decode a configured data set once and report it")
    add_common_args(p_check, CheckConfig, default_out="results/runs/data-check")
    args = parser.parse_args(argv)
    schema = PrepareConfig if args.command == "prepare" else CheckConfig
    cfg = config_from_args(schema, args)
    out = prepare_out_dir(args.out, cfg, stage=f"data.{args.command}")
    try:
        # the schema, hence cfg's type, follows the command
        rows = (
            prepare(cast(PrepareConfig, cfg), force=args.force)
            if args.command == "prepare"
            else check(cast(CheckConfig, cfg))
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(out / "summary.json", json.dumps(rows, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
