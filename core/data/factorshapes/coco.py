"""FactorShapes COCO export: the det splits' annotation files, one per labelled factor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.data.base import DataError, require_path
from core.data.factorshapes.scene import CATEGORY_NAMES, DET_SPLITS, GEN_VERSION, OBJECT_FACTORS


def coco_keys(split: str) -> tuple[str, ...]:
    """Annotation files of a det split: shape, color, orient, and chiral for det-upright only."""
    return (
        ("shape", "color", "orient", "chiral")
        if split == "det-upright"
        else ("shape", "color", "orient")
    )


def coco_dict(
    records: list[dict[str, Any]], factor: str, image_size: int, description: str = "FactorShapes"
) -> dict[str, Any]:
    """A COCO instances dict for ``records`` (``render_sample`` records in index order) with
    ``category_id = record[factor] + 1``. Image ids are index + 1 (file ``{index:06d}.png``); each
    image entry carries ``count`` (number of objects), ``bg`` and ``light``; each annotation carries
    the other object factors under ``attributes``."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        images.append(
            {
                "id": index + 1,
                "file_name": f"{index:06d}.png",
                "width": image_size,
                "height": image_size,
                "count": len(record["objects"]),
                "bg": record["labels"]["bg"],
                "light": record["labels"]["light"],
            }
        )
        for obj in record["objects"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": obj[factor] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "segmentation": [obj["polygon"]],
                    "iscrowd": 0,
                    "attributes": {name: obj[name] for name in OBJECT_FACTORS if name != factor},
                }
            )
    categories = [
        {"id": k + 1, "name": name, "supercategory": factor}
        for k, name in enumerate(CATEGORY_NAMES[factor])
    ]
    return {
        "info": {"description": description, "version": str(GEN_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def coco_files(cache_dir: Path) -> dict[str, Path]:
    """The COCO files of a det cache folder: ``{"shape", "color", "orient"[, "chiral"]: path}``."""
    meta = json.loads(
        require_path(Path(cache_dir) / "meta.json", "FactorShapes meta.json").read_text()
    )
    if meta["split"] not in DET_SPLITS:
        raise DataError(
            f"{cache_dir} holds split '{meta['split']}'; COCO files exist for "
            f"{', '.join(DET_SPLITS)}"
        )
    return {
        key: require_path(
            Path(cache_dir) / "annotations" / f"instances_{key}.json", f"COCO file {key}"
        )
        for key in coco_keys(meta["split"])
    }
