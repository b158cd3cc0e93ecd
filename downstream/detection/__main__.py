"""Detection and instance segmentation transfer with MMDetection (Faster / Mask R-CNN).

  python -m downstream.detection --protocol embedded-frcnn --ckpt CKPT [--floor] [--set key=value ...]
  python -m downstream.detection --protocol embedded-mrcnn --ckpt CKPT --set categories=color

Protocol cards live in downstream/detection/configs/ (embedded-frcnn, embedded-mrcnn: FactorShapes `det`;
--set overrides any card key, e.g. max_iters=600 data.categories=orient). --ckpt takes any checkpoint the
importer accepts; its backbone is exported to the file mmdet's Pretrained init loads, and training starts only
after a check that every ResNet tensor of the detector equals it. --floor also trains a random-init backbone
of the same architecture under the same schedule. Each run keeps mmdet's logs and final weights under
--out/<protocol>_<label>_s<seed>/ and appends AP, AP50, AP75 (box, and mask for Mask R-CNN) to --records.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.checkpoints import CheckpointError
from core.config import ConfigError, parse_override
from core.logs import setup_logging

METRICS = {"bbox": "box", "segm": "mask"}


def record_runs(card, metrics: dict[str, float], *, method: str, arch: str, ckpt, seed: int, records: Path,
                n_train: int, n_test: int, epochs) -> int:
    """One record per AP number, with the protocol and the torch / mmcv / mmdet versions."""
    import mmcv
    import mmdet
    import torch

    from core.records import append_record, checkpoint_ref, make_record

    versions = {"torch": torch.__version__, "mmcv": mmcv.__version__, "mmdet": mmdet.__version__}
    stage = "segmentation" if card.masks else "detection"
    written = 0
    for kind, label in METRICS.items():
        for suffix, name in (("mAP", "AP"), ("mAP_50", "AP50"), ("mAP_75", "AP75")):
            key = f"coco/{kind}_{suffix}"
            if key not in metrics:
                continue
            append_record(records, make_record(
                stage=stage, method=method, arch=arch, pretrain_ckpt=checkpoint_ref(ckpt), pretrain_epochs=epochs,
                dataset=f"factorshapes/{card.data.split}" if card.data.type == "factorshapes" else card.data.type,
                task=card.data.get("categories", "objects"), protocol=card.protocol, seed=seed,
                metric=f"{label}_{name}", value=100 * float(metrics[key]), n_train=n_train, n_test=n_test,
                config={k: v for k, v in card.to_dict().items() if k not in ("train_augment",)},
                record_versions=versions))
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m downstream.detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="embedded-frcnn", help="protocol card id or path (default: %(default)s)")
    parser.add_argument("--ckpt", type=Path, action="append", default=[], help="checkpoint to transfer (repeatable)")
    parser.add_argument("--floor", action="store_true", help="also train a random-init backbone (the floor)")
    parser.add_argument("--arch", default=None, help="architecture of the floor without --ckpt, e.g. resnet18w16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override card keys, e.g. max_iters=600 data.categories=color")
    parser.add_argument("--data-root", default=None, help="FactorShapes cache folder (default: the data cache)")
    parser.add_argument("--out", type=Path, default=Path("results/runs/detection"))
    parser.add_argument("--records", type=Path, default=None,
                        help="records file (default: results/records/<detection|segmentation>.jsonl)")
    args = parser.parse_args(argv)
    setup_logging()

    from downstream.classification.__main__ import parse_arch
    from downstream.classification.features import load_backbone, random_backbone
    from downstream.detection.runner import factorshapes_parts, load_card, run

    try:
        overrides = {}
        for text in args.overrides:
            path, value = parse_override(text)
            overrides[".".join(path)] = value
        card = load_card(args.protocol, overrides)
        records = args.records or Path("results/records") / f"{'segmentation' if card.masks else 'detection'}.jsonl"
        parts = factorshapes_parts(card, args.data_root)
        runs = [load_backbone(ckpt) for ckpt in args.ckpt]  # each checkpoint read once
        if args.floor:
            archs = {(bb.arch, bb.base_width) for bb in runs} or ({parse_arch(args.arch)} if args.arch else set())
            if not archs:
                parser.error("--floor needs a --ckpt or --arch to know the architecture")
            runs += [random_backbone(a, w, args.seed) for a, w in sorted(archs)]
        if not runs:
            parser.error("nothing to train: give --ckpt and/or --floor")
        n_train, n_test = (len(json.loads(Path(parts[p]["ann"]).read_text())["images"]) for p in ("train", "val"))
        for bb in runs:
            label = f"{bb.method}_{bb.arch}w{bb.base_width}".replace(":", "-")
            start = time.time()
            metrics = run(card, parts, bb.ckpt, bb.arch, bb.base_width,
                          args.out / f"{card.protocol}_{label}_s{args.seed}", args.seed)
            written = record_runs(card, metrics, method=bb.method, arch=bb.arch_label, ckpt=bb.ckpt, seed=args.seed,
                                  records=records, n_train=n_train, n_test=n_test, epochs=bb.pretrain_epochs)
            summary = ", ".join(f"{k.split('/')[1]} {100 * v:.1f}" for k, v in metrics.items() if "mAP" in k
                                and not k.endswith(("_s", "_m", "_l")))
            print(f"{card.protocol} {bb.method} {bb.arch_label}: {summary} ({written} records, {time.time() - start:.0f} s)")
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
