"""Backbones to evaluate (any checkpoint the importer accepts, or a random-init floor) and their
frozen features, extracted once per (backbone weights, data, part, transform) and cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from core.data.base import ImageDataset
from core.data.transforms import to_float
from core.io import atomic_torch_save
from core.logs import progress

log = logging.getLogger("downstream.classification")


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
