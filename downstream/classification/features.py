"""Frozen backbone features of a labelled data set (one pass, no augmentation)."""
from __future__ import annotations

import torch

from core.backbones import build_backbone
from core.checkpoints import load_checkpoint
from core.data.base import ImageDataset
from core.data.transforms import to_float
from core.logs import progress


def load_suite_backbone(path: str | None, arch: str = "resnet18", base_width: int = 64, seed: int = 0) -> torch.nn.Module:
    """The backbone of a suite checkpoint, or a random-init one (the floor) when ``path`` is None."""
    if path is None:
        torch.manual_seed(seed)
        return build_backbone(arch, base_width).eval()
    state = load_checkpoint(path)
    model = build_backbone(state["arch"], state.get("base_width", 64))
    model.load_state_dict(state["backbone"])
    return model.eval()


@torch.no_grad()
def extract(backbone: torch.nn.Module, dataset: ImageDataset, batch_size: int = 256,
            device: str | torch.device = "cpu", desc: str = "features") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Features [N, D] (float32, CPU) and every label of ``dataset`` as int64 tensors."""
    backbone = backbone.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    feats, labels = [], {name: [] for name in dataset.label_names}
    for images, targets in progress(loader, desc=desc):
        feats.append(backbone(to_float(images.to(device))).float().cpu())
        for name in labels:
            labels[name].append(targets[name])
    return torch.cat(feats), {name: torch.cat(values) for name, values in labels.items()}
