"""Detection and instance segmentation transfer with MMDetection (Faster / Mask R-CNN).

  python -m downstream.detection --protocol embedded-frcnn --ckpt CKPT [--floor] [--set key=value
  ...]
  python -m downstream.detection --protocol embedded-mrcnn --ckpt CKPT --set data.categories=color

Protocol cards live in downstream/detection/configs/: embedded-frcnn, embedded-mrcnn (FactorShapes
`det`, CPU minutes), voc0712-frcnn-c4-24k (VOCdevkit folder), coco-mrcnn-fpn-1x and coco-mrcnn-c4-1x
(COCO folder).
--set overrides any card key, e.g. max_iters=600 data.categories=orient data.root=/data/coco.
Several GPUs:
torchrun --nproc_per_node 8 -m downstream.detection ... (mmengine's pytorch launcher, SyncBN kept;
batch_size in the card is the total over processes). Runs whose records exist are skipped unless
--force. --ckpt takes any checkpoint the importer accepts; its backbone is exported to the file
mmdet's Pretrained init loads, and training starts only after a check that every ResNet tensor of
the detector equals it. --floor also trains a random-init backbone of the same architecture under
the same schedule. Each run keeps mmdet's logs and final weights under
--out/<protocol>[_<data variant>]_<label>_s<seed>/ (the variant: a data.split or data.categories
other than the card's, e.g. embedded-frcnn_color_...) and appends AP, AP50, AP75 (box, and mask
for Mask R-CNN) to --records. A run whose loss turns NaN stops at that iteration and is recorded
with null AP and its reason (`diverged`), so it is not retried and the tables leave it out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from core.checkpoints import CheckpointError
from core.cli import add_set_arg
from core.config import ConfigError, parse_override
from core.logs import setup_logging
from core.records import ckpt_field, floor_init, read_records
from core.runlock import RunLock

#: mmdet metric keys -> record metric names: COCO box/mask AP, AP50, AP75; VOC (pascal_voc/) box AP
#: over IoU 0.50:0.95 (11-point AP per threshold), AP50 and AP75.
METRIC_KEYS = {
    "coco/bbox_mAP": "box_AP",
    "coco/bbox_mAP_50": "box_AP50",
    "coco/bbox_mAP_75": "box_AP75",
    "coco/segm_mAP": "mask_AP",
    "coco/segm_mAP_50": "mask_AP50",
    "coco/segm_mAP_75": "mask_AP75",
    "pascal_voc/mAP": "box_AP",
    "pascal_voc/AP50": "box_AP50",
    "pascal_voc/AP75": "box_AP75",
}


def dataset_name(card) -> str:
    return (
        f"factorshapes/{card.data.split}"
        if card.data.type == "factorshapes"
        else card.data.get("name", card.data.type)
    )


def part_size(part: dict) -> int:
    """Images in a part: COCO annotation file entries, or lines of the VOC image-set files."""
    if part["kind"] == "coco":
        return len(json.loads(Path(part["ann"]).read_text())["images"])
    return sum(len(Path(part["root"], s).read_text().split()) for s in part["sets"])


def record_runs(
    card,
    metrics: dict[str, float],
    *,
    method: str,
    arch: str,
    ckpt_ref: dict[str, str] | None,
    seed: int,
    records: Path,
    n_train: int,
    n_test: int,
    epochs,
    init: str | None = None,
    diverged: str | None = None,
) -> int:
    """One record per AP number, with the protocol and the torch / mmcv / mmdet versions.

    ``ckpt_ref``: ``core.records.checkpoint_ref`` of the pretrained checkpoint (None for a random
    init, whose ``init``, ``core.checkpoints.FLOOR_INIT``, goes into the record's config).
    ``diverged``: why training stopped; the values are then NaN (null in the file), so the run
    counts as done for the skip check and the tables leave it out.
    """
    import mmcv
    import mmdet
    import torch

    from core.records import append_record, make_record

    versions = {"torch": torch.__version__, "mmcv": mmcv.__version__, "mmdet": mmdet.__version__}
    stage = "segmentation" if card.masks else "detection"
    written = 0
    for key, name in METRIC_KEYS.items():
        if key not in metrics:
            continue
        value = 100 * float(metrics[key])  # both metrics report fractions
        append_record(
            records,
            make_record(
                stage=stage,
                method=method,
                arch=arch,
                pretrain_ckpt=ckpt_ref,
                pretrain_epochs=epochs,
                dataset=dataset_name(card),
                task=card.data.get("categories", "objects"),
                protocol=card.protocol,
                seed=seed,
                metric=name,
                value=value,
                n_train=n_train,
                n_test=n_test,
                config={
                    **{k: v for k, v in card.to_dict().items() if k not in ("train_augment",)},
                    **({"init": init} if init is not None else {}),
                },
                record_versions=versions,
                **({"diverged": diverged} if diverged else {}),
            ),
        )
        written += 1
    return written


def expected_metrics(card, parts: dict) -> list[str]:
    """The mmdet metric keys the card's evaluation reports (what a diverged run records as null)."""
    if parts["val"].get("kind") == "voc":
        return [k for k in METRIC_KEYS if k.startswith("pascal_voc/")]
    kinds = {"bbox": "coco/bbox_", "segm": "coco/segm_"}
    return [k for k in METRIC_KEYS if any(k.startswith(kinds[m]) for m in card.metrics)]


def already_recorded(records: Path, card, bb, ckpt_ref: dict[str, str] | None, seed: int) -> bool:
    """Whether ``records`` holds this protocol's AP for this backbone (same checkpoint file
    content), data and seed."""
    if not records.is_file():
        return False
    table = read_records(records)
    if table.empty:
        return False
    same = (
        (table["protocol"] == card.protocol)
        & (table["seed"] == seed)
        & (table["dataset"] == dataset_name(card))
        & (table["task"] == card.data.get("categories", "objects"))
        & (table["arch"] == bb.arch_label)
    )
    if ckpt_ref is None:  # a floor: also its init (older floors were initialised otherwise)
        init = table["config"].map(floor_init)
        same &= (table["method"] == bb.method) & table["pretrain_ckpt"].isna() & (init == bb.init)
    else:
        same &= table["pretrain_ckpt"].map(ckpt_field) == ckpt_ref["sha256"]
    return bool(same.any())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m downstream.detection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--protocol",
        default="embedded-frcnn",
        help="protocol card id or path (default: %(default)s)",
    )
    parser.add_argument(
        "--ckpt", type=Path, action="append", default=[], help="checkpoint to transfer (repeatable)"
    )
    parser.add_argument(
        "--floor", action="store_true", help="also train a random-init backbone (the floor)"
    )
    parser.add_argument(
        "--arch", default=None, help="architecture of the floor without --ckpt, e.g. resnet18w16"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_set_arg(parser, "override card keys, e.g. max_iters=600 data.categories=color")
    parser.add_argument(
        "--force", action="store_true", help="run even when records for the run exist"
    )
    parser.add_argument(
        "--data-root", default=None, help="FactorShapes cache folder (default: the data cache)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/runs/detection"))
    parser.add_argument(
        "--records",
        type=Path,
        default=None,
        help="records file (default: results/records/<detection|segmentation>.jsonl)",
    )
    return parser


def _backbones(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list:
    """The --ckpt backbones (each checkpoint read once), then the --floor ones."""
    from core.backbones import parse_arch
    from core.checkpoints import load_backbone, random_backbone

    runs = [load_backbone(ckpt) for ckpt in args.ckpt]
    if args.floor:
        archs = {(bb.arch, bb.base_width) for bb in runs} or (
            {parse_arch(args.arch)} if args.arch else set()
        )
        if not archs:
            parser.error("--floor needs a --ckpt or --arch to know the architecture")
        runs += [random_backbone(a, w, args.seed) for a, w in sorted(archs)]
    if not runs:
        parser.error("nothing to train: give --ckpt and/or --floor")
    return runs


#: The card's data keys whose values name a variant of its data set (and so of the run folder).
DATA_VARIANT_KEYS = ("split", "categories")


def data_tag(card, default) -> str:
    """The data variant ``card`` trains on, against the protocol's own card ``default``: the values
    of ``DATA_VARIANT_KEYS`` that differ, joined by '-' ("" when none does)."""
    data, base = card.get("data") or {}, default.get("data") or {}
    return "-".join(str(data[k]) for k in DATA_VARIANT_KEYS if data.get(k) != base.get(k))


def run_folder(out: Path, card, label: str, seed: int, tag: str = "") -> Path:
    """Where one run keeps mmdet's logs and weights: one folder per protocol, data variant,
    backbone and seed, so that the category runs of one checkpoint do not share it."""
    return out / f"{card.protocol}{'_' + tag if tag else ''}_{label}_s{seed}"


def _transfer(
    args: argparse.Namespace,
    card,
    parts: dict,
    bb,
    records: Path,
    sizes: tuple[int, int],
    main_process: bool,
    tag: str = "",
) -> None:
    """Train and evaluate one backbone unless its records exist; the main process records it.
    ``tag``: the card's data variant (``data_tag``), part of the run folder's name."""
    from core.records import checkpoint_ref
    from downstream.detection.runner import DetectionDiverged, run

    # hashed once per backbone: the skip check and every record
    ckpt_ref = checkpoint_ref(bb.ckpt)
    if not args.force and already_recorded(records, card, bb, ckpt_ref, args.seed):
        print(
            f"{card.protocol} {bb.method} {bb.arch_label} seed {args.seed}: records exist "
            f"in {records}, skipped (--force redoes it)"
        )
        return
    label = f"{bb.method}_{bb.arch}w{bb.base_width}".replace(":", "-")
    start = time.time()
    folder = run_folder(args.out, card, label, args.seed, tag)
    diverged = None
    with RunLock(folder, "detection") if main_process else contextlib.nullcontext():
        try:
            metrics = run(card, parts, bb.ckpt, bb.arch, bb.base_width, folder, args.seed)
        except DetectionDiverged as exc:
            diverged, metrics = str(exc), dict.fromkeys(expected_metrics(card, parts), math.nan)
    if not main_process:
        return
    if not any(k in METRIC_KEYS for k in metrics):
        raise RuntimeError(
            f"{card.protocol} {bb.method} {bb.arch_label}: the evaluation returned no AP "
            f"(mmdet found no detections on the val set; its log is in {folder}): nothing recorded"
        )
    n_train, n_test = sizes
    written = record_runs(
        card,
        metrics,
        method=bb.method,
        arch=bb.arch_label,
        ckpt_ref=ckpt_ref,
        seed=args.seed,
        records=records,
        n_train=n_train,
        n_test=n_test,
        epochs=bb.pretrain_epochs,
        init=bb.init,
        diverged=diverged,
    )
    if diverged:
        print(
            f"diverged: {card.protocol} {bb.method} {bb.arch_label} seed {args.seed}: {diverged}; "
            f"{written} null records in {records} say so (tables leave it out; --force with a "
            f"lower --set lr=... redoes it)",
            file=sys.stderr,
        )
        return
    summary = ", ".join(
        f"{METRIC_KEYS[k]} {100 * v:.1f}" for k, v in metrics.items() if k in METRIC_KEYS
    )
    print(
        f"{card.protocol} {bb.method} {bb.arch_label}: {summary} ({written} records, "
        f"{time.time() - start:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup_logging()

    from downstream.detection.runner import data_parts, load_card

    try:
        overrides = {}
        for text in args.overrides:
            path, value = parse_override(text)
            overrides[".".join(path)] = value
        card = load_card(args.protocol, overrides)
        tag = data_tag(card, load_card(args.protocol, {}))
        records = (
            args.records
            or Path("results/records") / f"{'segmentation' if card.masks else 'detection'}.jsonl"
        )
        parts = data_parts(card, args.data_root)
        runs = _backbones(args, parser)
        sizes = part_size(parts["train"]), part_size(parts["val"])
        main_process = int(os.environ.get("RANK", "0")) == 0
        for bb in runs:
            _transfer(args, card, parts, bb, records, sizes, main_process, tag)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
