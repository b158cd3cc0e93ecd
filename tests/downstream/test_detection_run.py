"""Each embedded detection protocol builds and runs 2 training iterations plus COCO evaluation on a tiny
COCO-layout data set written here; with a pretrained backbone the hand-off check runs before training."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from downstream.detection.runner import load_card, run
from tests.downstream.test_handoff import suite_file


def tiny_coco(root, n=4, size=96):
    """n images with 1-2 coloured squares each; categories by colour; polygons as masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        pixels = np.full((size, size, 3), 40, np.uint8)
        for _ in range(1 + i % 2):
            x, y, w = int(rng.integers(5, 50)), int(rng.integers(5, 50)), int(rng.integers(20, 40))
            category = int(rng.integers(2))
            pixels[y:y + w, x:x + w] = (220, 40, 40) if category == 0 else (40, 220, 40)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category + 1,
                                "bbox": [x, y, w, w], "area": w * w, "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + w, x, y + w]]})
        Image.fromarray(pixels).save(root / "images" / f"{i:06d}.png")
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
    ann = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (root / "ann.json").write_text(json.dumps(ann))
    part = {"img": str(root / "images"), "ann": str(root / "ann.json"), "classes": ("red", "green")}
    return {"train": part, "val": part}


@pytest.mark.parametrize("protocol", ["embedded-frcnn", "embedded-mrcnn"])
def test_two_iterations_and_evaluation(protocol, tmp_path):
    parts = tiny_coco(tmp_path / "coco")
    ckpt, _ = suite_file(tmp_path)
    card = load_card(protocol, {"max_iters": 2, "warmup_iters": 1, "milestones": [1], "batch_size": 2,
                                "image_scale": (96, 96)})
    metrics = run(card, parts, ckpt, "resnet18", 16, tmp_path / "work", seed=0)
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75"} <= set(metrics)
    assert ("coco/segm_mAP" in metrics) == (protocol == "embedded-mrcnn")
    assert all(-1 <= value <= 1 for value in metrics.values())
    assert (tmp_path / "work" / "backbone.pth").is_file()
    logs = "".join(p.read_text() for p in (tmp_path / "work").rglob("*.log"))
    assert "hand-off check: 100 ResNet tensors equal" in logs


def test_unknown_protocol_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="known protocols: .*embedded-frcnn"):
        load_card("voc-typo")
