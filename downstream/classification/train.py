"""Supervised training on images, shared by ``linear-sgd`` (frozen backbone), ``finetune`` (whole
network) and the supervised ceiling (whole network from scratch): a linear head, cosine schedule,
per-step progress."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from core.data.base import ImageDataset
from core.data.transforms import resize_center_crop, to_float
from core.logs import progress_bar
from core.memory_format import choose_for

CPU = torch.device("cpu")


class LabelView(torch.utils.data.Dataset):
    """``(image, label)`` pairs of one label of ``dataset`` (several labels: a vector of them),
    restricted to ``indices``, through ``transform``."""

    def __init__(
        self,
        dataset: ImageDataset,
        label: str | Sequence[str],
        indices: Sequence[int] | None = None,
        transform=None,
    ):
        self.dataset, self.label, self.transform = dataset, label, transform
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image, target = self.dataset[int(self.indices[i])]
        if self.transform is not None:
            image = self.transform(image)
        if isinstance(self.label, str):
            return image, target[self.label]
        return image, torch.tensor([target[name] for name in self.label])


class MultiHead(nn.Module):
    """One linear head per task on the same features; trained on the mean of their
    cross-entropies (``multi_task_loss``)."""

    def __init__(self, feature_dim: int, classes: Sequence[int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(feature_dim, n) for n in classes)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [head(features) for head in self.heads]


def multi_task_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of the cross-entropy of task k's logits against column k of ``labels``."""
    return torch.stack([F.cross_entropy(x, labels[:, k]) for k, x in enumerate(logits)]).mean()


def train_transform(
    size: int, crop_scale: tuple[float, float] | None, flip: bool, resize_ratio: float = 1.0
):
    """Random-resized crop (+ flip) on uint8 tensors; the evaluation resize when ``crop_scale`` is
    None."""
    steps = (
        [v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True)]
        if crop_scale
        else [resize_center_crop(size, resize_ratio)]
    )
    return v2.Compose(steps + ([v2.RandomHorizontalFlip()] if flip else []))


def _shuffled_loader(
    data: torch.utils.data.Dataset, batch_size: int, seed: int, num_workers: int
) -> torch.utils.data.DataLoader:
    """Batches in a ``seed``-fixed order; a data set smaller than a batch is one whole batch."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        data,
        batch_size=min(batch_size, len(data)),
        shuffle=True,
        drop_last=len(data) >= batch_size,
        generator=generator,
        num_workers=num_workers,
    )


def _optimizer(
    groups: list[tuple[list[nn.Parameter], float]], name: str, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """SGD or AdamW over ``groups``; each group keeps its peak lr for the cosine schedule."""
    params = [{"params": p, "lr": lr, "peak": lr} for p, lr in groups]
    return (
        torch.optim.SGD(params, momentum=momentum, weight_decay=weight_decay)
        if name == "sgd"
        else torch.optim.AdamW(params, weight_decay=weight_decay)
    )


def fit(
    backbone: nn.Module,
    head: nn.Module,
    data: torch.utils.data.Dataset,
    *,
    epochs: int,
    batch_size: int,
    groups: list[tuple[list[nn.Parameter], float]],
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    train_backbone: bool = True,
    device: torch.device = CPU,
    seed: int = 0,
    num_workers: int = 0,
    desc: str = "train",
    criterion: Callable = F.cross_entropy,
) -> list[float]:
    """Train ``head`` (and ``backbone`` when ``train_backbone``) with ``criterion`` (cross-entropy);
    returns the loss per epoch.

    ``groups`` are (parameters, peak lr) pairs; each lr follows a cosine from its peak to 0 over all
    steps. A frozen backbone stays in eval mode (BN statistics untouched), as in VICReg's linear
    evaluation.
    """
    loader = _shuffled_loader(data, batch_size, seed, num_workers)
    opt = _optimizer(groups, optimizer, weight_decay, momentum)
    # channels_last where core.memory_format finds it safe and faster (CUDA; CPUs with AVX-512
    # kernels).
    memory = choose_for(backbone, torch.device(device)).memory_format
    backbone.to(device, memory_format=memory).train(train_backbone)
    head.to(device).train()
    total, step, losses = epochs * len(loader), 0, []
    bar = progress_bar(total, desc=desc)
    for _ in range(epochs):
        running, seen = 0.0, 0
        for images, labels in loader:
            for group in opt.param_groups:
                group["lr"] = group["peak"] * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.set_grad_enabled(train_backbone):
                features = backbone(to_float(images.to(device)).contiguous(memory_format=memory))
            loss = criterion(head(features), labels.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss is {loss.item()} at step {step}; lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running, seen, step = running + loss.item() * len(labels), seen + len(labels), step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(running / max(seen, 1))
    bar.close()
    backbone.eval()
    head.eval()
    return losses


@torch.no_grad()
def evaluate(
    backbone: nn.Module,
    head: nn.Linear,
    data: torch.utils.data.Dataset,
    batch_size: int = 256,
    device: torch.device = CPU,
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy (a fraction) of ``head(backbone(x))`` on ``data``."""
    backbone.to(device).eval()
    head.to(device).eval()
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    correct = count = 0
    for images, labels in loader:
        logits = head(backbone(to_float(images.to(device))))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        count += len(labels)
    return correct / max(count, 1)
