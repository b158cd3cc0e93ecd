"""Backbones to evaluate (any checkpoint the importer accepts, or a random-init floor) and their
frozen features, extracted once per (backbone weights, data, part, transform) and cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from core.backbones import build_backbone
from core.checkpoints import CheckpointError, load_file
from core.data.base import ImageDataset
from core.data.transforms import to_float
from core.io import atomic_torch_save
from core.logs import progress

log = logging.getLogger("downstream.classification")


@dataclasses.dataclass
class Backbone:
    """A backbone with what records say about it."""

    model: torch.nn.Module
    method: str
    arch: str
    base_width: int
    ckpt: Path | None = None
    pretrain_epochs: int | None = None
    pretrain_seed: int | None = None

    @property
    def arch_label(self) -> str:
        """``resnet50``, or ``resnet18w16`` for a reduced base width."""
        return self.arch if self.base_width == 64 else f"{self.arch}w{self.base_width}"


def load_backbone(path: str | Path, fmt: str = "auto") -> Backbone:
    """The backbone of any supported checkpoint (suite, torchvision, MoCo, solo-learn, lightly,
    mmselfsup), loaded strictly; heads and projectors are dropped (and logged)."""
    from core.checkpoint_import import extract_backbone

    obj = load_file(path)
    try:
        weights, report = extract_backbone(obj, fmt)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if report.dropped:
        log.info(
            "%s: %s layout, dropped %d non-backbone keys", path, report.format, len(report.dropped)
        )
    model = build_backbone(report.arch, report.base_width)
    model.load_state_dict(weights, strict=True)
    suite = report.format == "mast-suite"
    config = obj.get("config") if suite and isinstance(obj.get("config"), dict) else {}
    method = obj.get("method", "unknown") if suite else f"imported:{report.format}"
    return Backbone(
        model.eval(),
        method,
        report.arch,
        report.base_width,
        Path(path),
        obj.get("epoch") if suite else None,
        config.get("seed"),
    )


def random_backbone(arch: str, base_width: int, seed: int) -> Backbone:
    """The floor: a freshly initialised backbone (torchvision's init) drawn with ``seed``."""
    torch.manual_seed(seed)
    return Backbone(
        build_backbone(arch, base_width).eval(), "random-init", arch, base_width, None, 0, seed
    )


def load_suite_backbone(
    path: str | None, arch: str = "resnet18", base_width: int = 64, seed: int = 0
) -> torch.nn.Module:
    """The backbone module of a checkpoint, or a random-init one (the floor) when ``path`` is
    None."""
    return (random_backbone(arch, base_width, seed) if path is None else load_backbone(path)).model


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state_dict (names, dtypes, shapes, bytes): the backbone's
    identity."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(
            tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()


@torch.no_grad()
def extract(
    backbone: torch.nn.Module,
    dataset: ImageDataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    desc: str = "features",
    num_workers: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Features [N, D] (float32, CPU) and every label of ``dataset`` as int64 tensors."""
    backbone = backbone.to(device).eval()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    feats, labels = [], {name: [] for name in dataset.label_names}
    for images, targets in progress(loader, desc=desc):
        feats.append(backbone(to_float(images.to(device))).float().cpu())
        for name in labels:
            labels[name].append(targets[name])
    return torch.cat(feats), {name: torch.cat(values) for name, values in labels.items()}


class FeatureCache:
    """Features on disk under ``root/<backbone hash[:16]>/<key hash>.pt``, written atomically.

    The key is the backbone's weight hash plus a description of the data part and the transform, so
    a retrained checkpoint at the same path, or a different resolution, never reuses stale features.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = self.misses = 0

    def path(self, backbone_hash: str, key: dict[str, Any]) -> Path:
        text = json.dumps({"backbone": backbone_hash, **key}, sort_keys=True)
        return (
            self.root / backbone_hash[:16] / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt"
        )

    def get_or_extract(
        self,
        backbone: torch.nn.Module,
        backbone_hash: str,
        key: dict[str, Any],
        dataset_fn,
        batch_size: int,
        device: torch.device,
        desc: str,
        num_workers: int = 0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        path = self.path(backbone_hash, key)
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                log.info("reusing cached features %s (%s)", path, desc)
                return stored["features"], stored["labels"]
            except Exception as exc:  # a damaged cache file is recomputed, never trusted
                log.warning("cached features %s unreadable (%s); extracting again", path, exc)
        self.misses += 1
        features, labels = extract(backbone, dataset_fn(), batch_size, device, desc, num_workers)
        atomic_torch_save(
            {"features": features, "labels": labels, "key": json.dumps(key, sort_keys=True)}, path
        )
        log.info("cached features %s (%s, %d x %d)", path, desc, *features.shape)
        return features, labels
