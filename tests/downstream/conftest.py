"""Tiny FactorShapes classification parts (96 images per part at 32 px), generated once per test
session."""

import pytest

from core.config import DataConfig
from core.data import build_dataset


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A DataConfig for cls-upright with 96 images per part at 32 px in a session folder (cls-rot
    too)."""
    root = tmp_path_factory.mktemp("shapes")
    data = DataConfig(
        dataset="factorshapes",
        root=str(root),
        split="cls-upright",
        image_size=32,
        n=96,
        num_workers=0,
    )
    for split in ("cls-upright", "cls-rot"):
        for part in ("train", "val", "test"):
            build_dataset(
                DataConfig(**{**data.__dict__, "split": split}), part=part, progress=False
            )
    return data
