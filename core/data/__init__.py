"""Data sets behind one interface (``core.data.base.ImageDataset``), built from a ``DataConfig``."""

from __future__ import annotations

from pathlib import Path

from core.config import DataConfig
from core.data.base import DataError, ImageDataset, Transform
from core.io import suite_cache

__all__ = ["DataError", "ImageDataset", "build_dataset", "default_data_root"]


def default_data_root() -> Path:
    """Where generated data is cached: $MAST_DATA_CACHE, else ~/.cache/mast-suite/data."""
    return suite_cache("data", "MAST_DATA_CACHE")


def build_dataset(
    cfg: DataConfig, part: str = "train", transform: Transform | None = None, progress: bool = True
) -> ImageDataset:
    """The data set ``cfg`` describes, for ``part`` (train/val/test, or unlabeled for STL-10)."""
    if cfg.dataset == "factorshapes":
        from core.data.factorshapes import FactorShapesDataset

        return FactorShapesDataset(
            cfg.root or default_data_root(),
            split=cfg.split,
            part=part,
            n=cfg.n,
            image_size=cfg.image_size,
            seed=cfg.generator_seed,
            transform=transform,
            progress=progress,
            object_scale=cfg.object_scale,
        )
    if cfg.root is None:
        raise DataError(
            f"data.root is required for data.dataset={cfg.dataset}: pass --set data.root=PATH"
        )
    if cfg.dataset == "folder":
        from core.data.folder import ImageFolderDataset

        return ImageFolderDataset(
            cfg.root,
            part=part,
            labels=cfg.folder_labels,
            on_bad_image=cfg.on_bad_image,
            verify=cfg.verify_images,
            transform=transform,
        )
    if cfg.dataset == "stl10":
        from core.data.stl10 import STL10Dataset

        return STL10Dataset(cfg.root, part=part, transform=transform)
    if cfg.dataset in ("cifar10", "cifar100"):
        from core.data.cifar import CIFARDataset

        return CIFARDataset(cfg.root, cfg.dataset, part=part, transform=transform)
    if cfg.dataset == "fashion_mnist":
        from core.data.idx import IDXDataset

        return IDXDataset(cfg.root, part=part, transform=transform)
    raise DataError(
        f"unknown data.dataset '{cfg.dataset}'; valid: factorshapes, folder, stl10, cifar10, "
        "cifar100, fashion_mnist"
    )
