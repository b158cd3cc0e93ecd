"""Classification transfer: linear-lbfgs, knn, linear-sgd and finetune on frozen or fine-tuned
backbones.

  python -m downstream.classification --config FILE --ckpt CKPT [--ckpt CKPT ...] [--set key=value
  ...]
  python -m downstream.classification --config FILE --runs results/runs --floor --ceiling

--ckpt takes any checkpoint the importer accepts (suite, torchvision, MoCo v1-v3, solo-learn,
lightly, mmselfsup; see `python -m core.checkpoints inspect FILE`). --runs evaluates every finished
pretraining checkpoint (last.pt) under a folder. --floor adds a random-init backbone of each
evaluated architecture (one per floor_seeds), --ceiling networks of that architecture trained with
the tasks' labels (by default one per image part, a head per task; computed once, then reused),
--pixels logistic regression and kNN on the raw pixels (the reference a learned representation
should beat). One record per number goes to
--records; a record that exists is never computed again, and frozen features are cached (config key
`cache`), so re-running is cheap and adds no duplicates.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from core.backbones import parse_arch
from core.checkpoints import CheckpointError, load_file
from core.cli import add_common_args, config_from_args, prepare_out_dir
from core.config import ConfigError
from core.data.base import DataError
from core.logs import setup_logging
from core.runlock import RunLock
from downstream.classification.config import ClassificationConfig

log = logging.getLogger("downstream.classification")


def discover(runs: Path) -> list[Path]:
    """Finished pretraining checkpoints (``DIR/last.pt`` whose epoch reached the configured epochs)
    directly under ``runs``: nested folders (pilot, study sweeps, stale runs) are left to the tools
    that made them."""
    found = []
    for path in sorted(runs.glob("*/last.pt")):
        try:
            state = load_file(path)
        except CheckpointError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if not isinstance(state, dict) or state.get("method") in (None, "supervised"):
            continue
        epochs = (state.get("config") or {}).get("train", {}).get("epochs")
        if epochs is not None and state.get("epoch", epochs) < epochs:
            log.info(
                "skipping %s: still training (epoch %s of %s)", path, state.get("epoch"), epochs
            )
            continue
        found.append(path)
    return found


def _arch(text: str) -> tuple[str, int]:
    try:
        return parse_arch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m downstream.classification",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser, ClassificationConfig, default_out="results/runs/classification")
    parser.add_argument(
        "--ckpt", type=Path, action="append", default=[], help="checkpoint to evaluate (repeatable)"
    )
    parser.add_argument(
        "--format", default="auto", help="checkpoint layout for --ckpt (default: auto-detect)"
    )
    parser.add_argument(
        "--runs",
        type=Path,
        help="evaluate every finished pretraining run folder directly under this folder",
    )
    parser.add_argument(
        "--floor", action="store_true", help="add random-init backbones of each architecture"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="add the supervised networks (ceiling.joint: one per image part)",
    )
    parser.add_argument(
        "--pixels",
        action="store_true",
        help="add the raw-pixel reference: the frozen-feature protocols on the images themselves",
    )
    parser.add_argument(
        "--arch",
        type=_arch,
        action="append",
        default=[],
        help="architecture for --floor/--ceiling when no checkpoint gives one, e.g. resnet18w16",
    )
    parser.add_argument(
        "--records",
        type=Path,
        default=Path("results/records/classification.jsonl"),
        help="records file to append to (default: %(default)s)",
    )
    parser.add_argument(
        "--ceiling-dir",
        type=Path,
        default=Path("results/runs/ceiling"),
        help="where the ceiling networks are kept (default: %(default)s)",
    )
    return parser


def _evaluate_all(args: argparse.Namespace, evaluator, ckpts: list[Path]) -> None:
    """Each checkpoint, then the floor and ceiling of every architecture seen (--arch first), then
    the raw pixels."""
    from core.checkpoints import load_backbone

    archs = list(dict.fromkeys(args.arch))
    for path in ckpts:
        backbone = load_backbone(path, args.format)
        archs = list(dict.fromkeys(archs + [(backbone.arch, backbone.base_width)]))
        written = evaluator.evaluate_backbone(backbone)
        log.info("%s: %d new records%s", path, written, "" if written else " (all existed)")
    for arch, width in archs:
        if args.floor:
            log.info(
                "random-init floor %s w%d: %d new records",
                arch,
                width,
                evaluator.floor(arch, width),
            )
        if args.ceiling:
            log.info(
                "supervised ceiling %s w%d: %d new records",
                arch,
                width,
                evaluator.ceiling(arch, width, args.ceiling_dir),
            )
    if args.pixels:
        log.info("raw pixels: %d new records", evaluator.pixels())


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(ClassificationConfig, args)
    setup_logging()
    start = time.time()

    from downstream.classification.evaluate import Evaluator

    lock = None
    try:
        ckpts = list(args.ckpt) + (discover(args.runs) if args.runs else [])
        if not ckpts and not args.arch and not args.pixels:
            parser.error(
                "nothing to evaluate: give --ckpt, --runs (with finished runs), --pixels or --arch "
                "with --floor/--ceiling"
            )
        lock = RunLock(args.out, "classification").acquire()  # one process per output folder
        prepare_out_dir(args.out, cfg, stage="classification")
        evaluator = Evaluator(cfg, args.records, args.out)
        _evaluate_all(args, evaluator, ckpts)
    except (
        ConfigError,
        DataError,
        CheckpointError,
        FloatingPointError,
        ValueError,
        RuntimeError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            lock.release()
    cache = evaluator.cache
    print(
        f"done in {time.time() - start:.0f} s: {evaluator.written} new records in {args.records}; "
        f"features: {cache.hits} reused from the cache, {cache.misses} extracted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
