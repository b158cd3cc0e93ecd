"""``python -m core.checkpoints inspect FILE | export FILE OUT | convert FILE OUT``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.checkpoints.format import (
    CheckpointError,
    check_suite_state,
    describe,
    export_backbone,
    load_file,
)
from core.checkpoints.importers import FORMATS, convert, detect_format, extract_backbone


def inspect_file(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of any supported checkpoint: its layout, architecture, base width, the
    prefix its backbone sits under and key counts; suite checkpoints add ``describe``'s fields (and,
    where their backbone is not a ResNet the importer recognises, ``backbone_check`` with the
    reason)."""
    obj = load_file(path)
    try:
        fmt = detect_format(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if fmt != "mast-suite":
        try:
            return extract_backbone(obj, fmt)[1].summary()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    summary = describe(check_suite_state(obj, path))
    try:
        found = extract_backbone(obj, fmt)[1].summary()
        summary.update({k: v for k, v in found.items() if k != "format"})  # keep "mast-suite/1"
    except CheckpointError as exc:
        summary["backbone_check"] = f"failed: {exc}"
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.checkpoints",
        description="Inspect, export or import (convert) checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="print the layout, architecture, base width, prefix and key counts "
        "of a suite or supported external checkpoint",
    )
    inspect.add_argument("file", type=Path)
    export = sub.add_parser(
        "export", help="write the bare torchvision backbone state_dict of a suite checkpoint"
    )
    export.add_argument("file", type=Path)
    export.add_argument("out", type=Path)
    conv = sub.add_parser(
        "convert", help="import the ResNet backbone of an external checkpoint into a suite one"
    )
    conv.add_argument("file", type=Path)
    conv.add_argument("out", type=Path)
    conv.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="the source layout (default: auto, read from the keys)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            print(json.dumps(inspect_file(args.file), indent=2))
        elif args.command == "export":
            print(export_backbone(args.file, args.out))
        else:
            print(convert(args.file, args.out, args.format))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
