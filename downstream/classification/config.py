"""Config schema of the classification stage (``python -m downstream.classification``).

Every field that changes a number is here, so a record's ``config`` says how it was made. The
protocols are those of ``docs/protocols.md`` (linear-lbfgs, linear-sgd, knn, finetune); the floor is
a random-init backbone of the evaluated architecture, the ceiling a network of the same architecture
trained with labels.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from core.config import ConfigError, DataConfig

PROTOCOLS = ("linear-lbfgs", "knn", "linear-sgd", "finetune")
Protocol = Literal["linear-lbfgs", "knn", "linear-sgd", "finetune"]


@dataclasses.dataclass
class LbfgsConfig:
    #: L2 weights tried on the validation split (log-spaced); ties go to the stronger one.
    l2_grid: list[float] = dataclasses.field(
        default_factory=lambda: [10.0**e for e in range(-6, 1)]
    )
    #: [first exponent, last exponent, count]: a grid of ``count`` L2 weights log-spaced from
    #: 10^first to 10^last, replacing ``l2_grid`` (AugSelf's transfer protocol: [-6, 5, 45]).
    l2_logspace: list[float] | None = None
    max_iter: int = 200
    #: top1, or class_avg (mean per-class accuracy; the choice on val uses it too).
    metric: Literal["top1", "class_avg"] = "top1"

    def __post_init__(self) -> None:
        if self.l2_logspace is not None:
            triple = list(self.l2_logspace)
            if (
                len(triple) != 3
                or triple[2] < 1
                or triple[2] != int(triple[2])
                or triple[0] > triple[1]
            ):
                raise ConfigError(
                    f"lbfgs.l2_logspace = {self.l2_logspace} must be [first, last, count] with "
                    "first <= last and a whole count >= 1"
                )
            first, last, count = float(triple[0]), float(triple[1]), int(triple[2])
            step = (last - first) / (count - 1) if count > 1 else 0.0
            self.l2_grid = [10.0 ** (first + i * step) for i in range(count)]


@dataclasses.dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07


@dataclasses.dataclass
class ImageTrainingConfig:
    """Training on images (SGD with momentum, cosine schedule to 0, no restarts)."""

    epochs: int = 100
    batch_size: int = 256
    weight_decay: float = 1e-6
    momentum: float = 0.9
    #: Random-resized-crop scale range; null trains on the centre images (no augmentation).
    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    flip: bool = True


@dataclasses.dataclass
class SgdConfig(ImageTrainingConfig):
    """linear-sgd: a linear head on the frozen backbone."""

    lr: float = 0.02


@dataclasses.dataclass
class FinetuneConfig(ImageTrainingConfig):
    """finetune: the whole network on labelled subsets, one run per fraction."""

    #: Labelled fractions of the train split (class-balanced subsets, fixed per seed and recorded).
    fractions: list[float] = dataclasses.field(default_factory=lambda: [0.01, 0.1])
    #: Learning rates of the backbone and of the head, one per fraction.
    backbone_lr: list[float] = dataclasses.field(default_factory=lambda: [0.03, 0.01])
    head_lr: list[float] = dataclasses.field(default_factory=lambda: [0.08, 0.1])


@dataclasses.dataclass
class CeilingConfig:
    """The supervised reference: the same architecture trained from scratch on the labels."""

    #: One network per image part, a linear head per task, trained on the mean of the tasks'
    #: cross-entropies (FactorShapes: 2 networks for the 9 tasks); false: one network per label.
    joint: bool = True
    epochs: int = 8
    batch_size: int = 128
    #: AdamW learning rate and weight decay (the FactorShapes pilot's supervised recipe).
    lr: float = 0.002
    weight_decay: float = 1e-4


@dataclasses.dataclass
class ClassificationConfig:
    """``seed`` seeds what the evaluation draws (subsets, heads, shuffles), not the pretraining."""

    seed: int = 0
    #: auto (CUDA if available, else CPU), cpu, cuda, cuda:N, mps.
    device: str = "auto"
    data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(split="cls-upright", num_workers=0)
    )
    #: ``split/label`` pairs (FactorShapes) or label names; empty: FactorShapes' 9 factor tasks, or
    #: every label.
    tasks: list[str] = dataclasses.field(default_factory=list)
    protocols: list[Protocol] = dataclasses.field(default_factory=lambda: ["linear-lbfgs", "knn"])
    #: Evaluation images: shorter side resized to image_size * resize_ratio, then centre-cropped to
    #: image_size.
    resize_ratio: float = 1.0
    #: Data sets without a validation part: this fraction of train (fixed, seed 0) is held out for
    #: validation.
    val_fraction: float = 0.1
    batch_size: int = 256
    #: Where extracted features are kept, one file per (backbone, data, part, transform).
    cache: str = "results/runs/cache/features"
    lbfgs: LbfgsConfig = dataclasses.field(default_factory=LbfgsConfig)
    knn: KnnConfig = dataclasses.field(default_factory=KnnConfig)
    linear_sgd: SgdConfig = dataclasses.field(default_factory=SgdConfig)
    finetune: FinetuneConfig = dataclasses.field(
        default_factory=lambda: FinetuneConfig(epochs=20, weight_decay=0.0)
    )
    #: Random-init backbones of each evaluated architecture (the floor), one per seed.
    floor_seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    ceiling: CeilingConfig = dataclasses.field(default_factory=CeilingConfig)

    def __post_init__(self) -> None:
        fractions = self.finetune.fractions
        if not all(0 < f <= 1 for f in fractions):
            raise ConfigError(f"finetune.fractions must lie in (0, 1], got {fractions}")
        for name in ("backbone_lr", "head_lr"):
            if len(getattr(self.finetune, name)) != len(fractions):
                raise ConfigError(
                    f"finetune.{name} needs one value per fraction ({len(fractions)}), "
                    f"got {getattr(self.finetune, name)}"
                )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.knn.k < 1:
            raise ConfigError(f"knn.k must be at least 1, got {self.knn.k}")
