"""Versions of the installed stack and the check that its compiled pieces work.

``python -m core.env --check`` is the last step of ``make setup``: it runs a torchvision ResNet
forward and mmcv's RoIAlign and nms on CPU, and exits non-zero with the reason when one of them
fails; it also reports the CPU memory format training will use (``core.memory_format``, probed in a
child process) and why.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from importlib import metadata
from typing import Any

SETUP_HINT = "run `make setup` (it builds mmcv with its compiled ops and caches the wheel)"


class MissingOpsError(RuntimeError):
    """mmcv is absent or was installed without its compiled ops."""


def versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Versions of the packages every record names (as the imported module reports them, local
    build tag included), then of the distributions in ``extra`` (from their metadata, nothing
    imported); None for a package that is not installed."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "torchvision", "numpy", "mmengine", "mmcv", "mmdet"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - any import failure means "not usable"
            out[name] = None
    for name in extra:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def require_mmcv_ops() -> None:
    """Raise MissingOpsError with a one-line fix when mmcv's compiled ops cannot be imported."""
    try:
        from mmcv.ops import RoIAlign, nms  # noqa: F401
    except ImportError as exc:  # mmcv missing, or mmcv-lite without mmcv._ext
        raise MissingOpsError(
            f"mmcv's compiled ops are not available ({exc}): {SETUP_HINT}"
        ) from exc


def check_stack() -> dict[str, float]:
    """Run a ResNet-50 forward and mmcv RoIAlign + nms on CPU; return small numbers that prove they
    ran."""
    import torch
    import torchvision

    require_mmcv_ops()
    from mmcv.ops import RoIAlign, nms

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    feats = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [1, 2.0, 2.0, 7.0, 7.0]])
    pooled = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    if logits.shape != (1, 1000) or pooled.shape != (2, 4, 2, 2) or keep.tolist() != [0, 2]:
        raise RuntimeError(
            f"stack check gave wrong shapes: {logits.shape}, {pooled.shape}, {keep.tolist()}"
        )
    return {"resnet50_logit_sum": float(logits.sum()), "roi_align_sum": float(pooled.sum())}


def memory_formats() -> dict[str, dict[str, str]]:
    """The CPU memory format chosen for ResNet-18 at the tests' width (4) and the embedded one
    (16)."""
    import torch

    from core.memory_format import choose

    return {
        f"resnet18w{width}": choose(torch.device("cpu"), "resnet18", width).as_dict()
        for width in (4, 16)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.env",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="also run the CPU checks of torch and mmcv ops"
    )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"versions": versions()}
    if args.check:
        try:
            report["check"] = check_stack()
            report["memory_format"] = memory_formats()
        except Exception as exc:  # noqa: BLE001 - report any failure as one line
            print(json.dumps(report))
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(report))
    for name, choice in report.get("memory_format", {}).items():
        print(
            f"CPU memory format for {name}: {choice['memory_format']} ({choice['reason']})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
