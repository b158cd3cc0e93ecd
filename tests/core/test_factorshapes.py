"""FactorShapes: determinism, labels, geometry, the spec's pitfalls, cache and COCO export."""

import dataclasses
import hashlib
import json
import math
import os
import socket

import numpy as np
import pytest
import torch

from core.data import factorshapes as fs
from core.data.base import DataError
from core.io import TMP_PREFIX

# sha256 (first 16 hex digits) of images 0-3 of each split's train part at its default size. These
# change only when the rendering changes, which must come with a GEN_VERSION bump (and new constants
# here).
PINNED_GEN_VERSION = 1
PINNED_HASHES = {
    "pretrain": ("1929fef3897873e1", "aa4bc87029752971", "53e6047cbf0daf43", "b9faf93b66b55e56"),
    "cls-upright": ("c9ad076c42d31c77", "186081578fe70e09", "d9d616fb74b41f44", "f7edcb8a56f70424"),
    "cls-rot": ("6237ea6967f12d36", "b3083706a468ec62", "0ac0a936801299f8", "59391cc19319f7e8"),
    "det": ("b73d903473b4e084", "4f132c43dabd2113", "73c77bb6cd64bacd", "d8b19dac31015a2d"),
    "det-upright": ("5cbcfd35f619db45", "9212c33bf97c5f0b", "0b23ca92262fca5c", "1eeed9e737f76e63"),
}


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def scenes(split, n=200, size=None, part="train"):
    return [fs.sample_scene(split, part, i, size) for i in range(n)]


# ------------------------------------------------------------------------------------------
# constants
def test_constants_describe_the_spec():
    assert fs.FACTORS == {
        "shape": 8,
        "hue": 8,
        "orient": 8,
        "chiral": 2,
        "texture": 4,
        "size": 3,
        "pos": 4,
        "bg": 4,
        "light": 3,
    }
    assert len(fs.FACTOR_TASKS) == 9 and ("cls-rot", "orient") in fs.FACTOR_TASKS
    assert {label for _, label in fs.FACTOR_TASKS} == set(fs.FACTORS)
    assert (
        fs.DEFAULT_COUNTS[("pretrain", "train")] == 10_000
        and fs.DEFAULT_COUNTS[("det", "val")] == 500
    )
    assert set(fs.DEFAULT_COUNTS) == {(s, p) for s in fs.SPLITS for p in fs.PARTS[s]}
    assert (
        "chiral" in fs.LABELS_BY_SPLIT["cls-upright"]
        and "orient" not in fs.LABELS_BY_SPLIT["cls-upright"]
    )
    assert (
        "orient" in fs.LABELS_BY_SPLIT["cls-rot"] and "chiral" not in fs.LABELS_BY_SPLIT["cls-rot"]
    )


def test_canonical_polygons_have_unit_circumradius():
    for points in fs.CANONICAL:
        assert np.allclose(points.mean(axis=0), 0) and math.isclose(
            np.linalg.norm(points, axis=1).max(), 1
        )


# ------------------------------------------------------------------------------------------
# determinism
@pytest.mark.parametrize("split", fs.SPLITS)
def test_pinned_image_hashes(split):
    assert fs.GEN_VERSION == PINNED_GEN_VERSION, "GEN_VERSION changed: recompute PINNED_HASHES"
    hashes = tuple(digest(fs.render_sample(split, "train", i)[0]) for i in range(4))
    assert hashes == PINNED_HASHES[split]


def test_render_is_pure_and_ignores_global_rngs():
    np.random.seed(1)
    state = np.random.get_state()[1].copy()
    first, record = fs.render_sample("cls-rot", "val", 7, 48, seed=3)
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG was not used
    np.random.seed(2)
    torch.manual_seed(5)
    again, record_again = fs.render_sample("cls-rot", "val", 7, 48, seed=3)
    assert np.array_equal(first, again) and record == record_again
    assert first.dtype == np.uint8 and first.shape == (48, 48, 3)


def test_parts_seeds_and_indices_differ():
    images = [
        fs.render_sample(*args)[0]
        for args in [
            ("cls-rot", "train", 0),
            ("cls-rot", "val", 0),
            ("cls-rot", "test", 0),
            ("cls-upright", "train", 0),
            ("cls-rot", "train", 1),
            ("pretrain", "train", 0),
        ]
    ]
    images.append(fs.render_sample("cls-rot", "train", 0, seed=1)[0])
    assert len({digest(image) for image in images}) == len(images)


def test_sample_labels_matches_render():
    for split in fs.SPLITS:
        for i in range(3):
            assert (
                fs.sample_labels(split, "train", i)
                == fs.render_sample(split, "train", i)[1]["labels"]
            )


# ------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("split", fs.SPLITS)
def test_labels_in_range_and_every_class_appears(split):
    size = 32 if split not in fs.DET_SPLITS else 64
    labels = [fs.sample_labels(split, "train", i, size) for i in range(400)]
    classes = {**fs.FACTORS, **fs.DET_LABELS, "upright": 2}
    names = set(fs.LABELS_BY_SPLIT[split]) | ({"upright"} if split == "pretrain" else set())
    assert all(names <= set(record) for record in labels)
    for name in names:
        values = {record[name] for record in labels}
        assert values == set(range(classes[name])), name


def test_orientation_hue_and_size_stay_inside_their_bins():
    for split in ("pretrain", "cls-upright", "cls-rot", "det", "det-upright"):
        for scene in scenes(split, 60):
            width = scene.image_size
            fractions = fs.SIZE_FRACTIONS["det" if split in fs.DET_SPLITS else "cls"]
            for obj in scene.objects:
                assert abs(obj.angle - 45 * obj.orient) <= 10 + 1e-9
                if split.endswith("upright") or scene.labels.get("upright") == 1:
                    assert obj.orient == 0
                # circular difference, turns
                hue_error = (obj.hue_turns - obj.hue / 8 + 0.5) % 1.0 - 0.5
                assert abs(hue_error) <= 0.025 + 1e-9 and 0 <= obj.hue_turns < 1
                assert abs(obj.radius / width - fractions[obj.size]) <= 0.015 + 1e-9
    # wraps
    assert any(o.hue == 0 and o.hue_turns > 0.9 for s in scenes("cls-rot", 200) for o in s.objects)


def test_pretrain_mixes_upright_and_rotated():
    upright = [fs.sample_labels("pretrain", "train", i, 32)["upright"] for i in range(200)]
    assert 60 < sum(upright) < 140


# ------------------------------------------------------------------------------------------
# geometry
def test_objects_stay_inside_the_canvas_and_in_their_quadrant():
    for split in fs.SPLITS:
        for scene in scenes(split, 150, 64):
            for obj in scene.objects:
                polygon = fs.object_polygon(obj)
                assert polygon.min() >= 0 and polygon.max() <= scene.image_size
                assert min(obj.cx, obj.cy) >= obj.radius + 1 - 1e-9
                assert max(obj.cx, obj.cy) <= scene.image_size - obj.radius - 1 + 1e-9
            if "pos" in scene.labels:
                half = scene.image_size / 2
                obj = scene.objects[0]
                assert scene.labels["pos"] == int(obj.cx >= half) + 2 * int(obj.cy >= half)


@pytest.mark.parametrize("split", fs.DET_SPLITS)
def test_det_circumcircles_do_not_overlap(split):
    for scene in scenes(split, 300):
        objs = scene.objects
        assert 1 <= len(objs) <= 6 and scene.labels["count"] == len(objs) - 1
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert math.hypot(a.cx - b.cx, a.cy - b.cy) >= a.radius + b.radius + 1 - 1e-9


def test_texture_classes_have_equal_mean_value():
    for kind in range(4):  # the field alone, over a large window
        obj = dataclasses.replace(
            fs.sample_scene("cls-rot", "train", 0).objects[0], texture=kind, angle=23.0
        )
        y, x = np.mgrid[0:256, 0:256] + 0.5
        field = fs.texture_field(obj, x, y)
        assert abs(field.mean() - 0.65) < 0.01 and set(np.unique(field.round(6))) <= {
            0.3,
            0.65,
            1.0,
        }
    # rendered objects: white colour on a black canvas, textured / solid
    for split in (
        "cls-rot",
        "det",
    ):
        ratios = []
        for scene in scenes(split, 40):
            obj = dataclasses.replace(scene.objects[0], sat=0.0, val=1.0)
            sums = []
            for kind in range(4):
                canvas = np.zeros((scene.image_size, scene.image_size, 3))
                fs.draw_object(
                    canvas, dataclasses.replace(obj, texture=kind), fs.object_polygon(obj)
                )
                sums.append(canvas.sum())
            ratios.append(np.array(sums) / sums[0])
        assert np.abs(np.mean(ratios, axis=0) - 1).max() < 0.02, np.mean(ratios, axis=0)


def test_background_pool_is_fixed_and_dark():
    assert np.array_equal(fs.background(64, 2, 3), fs.background(64, 2, 3))
    pool = [fs.background(64, kind, variant) for kind in range(4) for variant in range(4)]
    assert len({a.tobytes() for a in pool}) == 16 and max(a.max() for a in pool) <= 0.5 + 1e-9


# ------------------------------------------------------------------------------------------ cache
def test_cache_matches_render_and_is_reused(tmp_path):
    folder = fs.ensure_split(tmp_path, "cls-upright", "train", n=24, image_size=32, progress=False)
    assert (
        folder
        == tmp_path / f"factorshapes-v{fs.GEN_VERSION}" / "seed0" / "cls-upright-32px" / "train-24"
    )
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npz")
    assert (
        images.shape == (24, 32, 32, 3)
        and labels["bbox"].shape == (24, 4)
        and labels["bbox"].dtype == np.float32
    )
    for i in (0, 5, 23):
        image, record = fs.render_sample("cls-upright", "train", i, 32)
        assert np.array_equal(images[i], image)
        assert all(int(labels[name][i]) == value for name, value in record["labels"].items())
        assert np.allclose(labels["bbox"][i], record["objects"][0]["bbox"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["gen_version"] == fs.GEN_VERSION and meta["n"] == 24 and meta["image_size"] == 32
    assert meta["images_sha256"] == hashlib.sha256((folder / "images.npy").read_bytes()).hexdigest()
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert (
        fs.ensure_split(tmp_path, "cls-upright", "train", n=24, image_size=32, progress=False)
        == folder
    )
    assert (folder / "meta.json").stat().st_mtime_ns == stamp


def test_workers_do_not_change_the_data(tmp_path):
    for split, size, n in (("pretrain", 32, 64), ("det", 64, 40)):
        one = fs.ensure_split(
            tmp_path / "w1", split, "train", n=n, image_size=size, workers=1, progress=False
        )
        two = fs.ensure_split(
            tmp_path / "w2", split, "train", n=n, image_size=size, workers=2, progress=False
        )
        meta_one, meta_two = (json.loads((f / "meta.json").read_text()) for f in (one, two))
        assert meta_one["images_sha256"] == meta_two["images_sha256"]
        for name in ("labels.npz", "images.npy", "annotations/instances_shape.json"):
            if (one / name).exists():
                assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert sorted(os.listdir(one.parent)) == ["train-40"]  # no temporary folder left behind


def test_half_written_cache_is_not_used(tmp_path):
    folder = fs.cache_dir(tmp_path, "pretrain", "train", n=16, image_size=32)
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((16, 32, 32, 3), np.uint8))  # no meta.json: incomplete
    dead_tmp = folder.parent / f"{TMP_PREFIX}{folder.name}-{socket.gethostname()}-999999999-abcd"
    dead_tmp.mkdir()
    (dead_tmp / "images.npy").write_bytes(b"half")
    dataset = fs.FactorShapesDataset(
        tmp_path, "pretrain", "train", n=16, image_size=32, progress=False
    )
    assert np.array_equal(
        dataset[3][0].permute(1, 2, 0).numpy(), fs.render_sample("pretrain", "train", 3, 32)[0]
    )
    assert not dead_tmp.exists()
    # A complete-looking folder from another generator version is rebuilt too.
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(meta | {"gen_version": -1}))
    fs.ensure_split(tmp_path, "pretrain", "train", n=16, image_size=32, progress=False)
    assert json.loads((folder / "meta.json").read_text())["gen_version"] == fs.GEN_VERSION


# ------------------------------------------------------------------------------------------ data
# set
def test_dataset_items_and_label_names(tmp_path):
    dataset = fs.FactorShapesDataset(
        tmp_path, "cls-rot", "val", n=16, image_size=32, progress=False
    )
    assert len(dataset) == 16 and dataset.label_names == {
        k: fs.FACTORS[k] for k in fs.LABELS_BY_SPLIT["cls-rot"]
    }
    image, target = dataset[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert set(target) == set(fs.LABELS_BY_SPLIT["cls-rot"]) and all(
        type(v) is int for v in target.values()
    )
    record = fs.render_sample("cls-rot", "val", 5, 32)[1]
    assert target == {k: record["labels"][k] for k in target}
    with pytest.raises(IndexError):
        dataset[16]


def test_unknown_split_or_part_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match="pretrain, cls-upright, cls-rot, det, det-upright"):
        fs.FactorShapesDataset(tmp_path, split="cls", progress=False)
    with pytest.raises(DataError, match="valid parts: train, val$"):
        fs.ensure_split(tmp_path, "det", "test")
    with pytest.raises(DataError, match="at least 48"):
        fs.render_sample("det", "train", 0, image_size=32)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ COCO
# pycocotools' numpy-2 copy keyword notice
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("split", fs.DET_SPLITS)
def test_coco_files_are_valid(tmp_path, split):
    from pycocotools.coco import COCO

    size, n = 128, 12
    folder = fs.ensure_split(tmp_path, split, "val", n=n, progress=False)
    files = fs.coco_files(folder)
    assert set(files) == (
        {"shape", "color", "orient", "chiral"}
        if split == "det-upright"
        else {"shape", "color", "orient"}
    )
    dataset = fs.FactorShapesDataset(tmp_path, split, "val", n=n, progress=False)
    assert dataset.label_names == {"count": 6, "bg": 4, "light": 3}
    shape_anns = None
    for key, path in files.items():
        coco = COCO(str(path))
        factor = fs.COCO_FACTORS[key]
        assert sorted(coco.getCatIds()) == list(range(1, fs.FACTORS[factor] + 1))
        assert len(coco.getImgIds()) == n
        relative = []
        for image_id in coco.getImgIds():
            entry = coco.loadImgs(image_id)[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert entry["count"] == len(anns) == dataset[image_id - 1][1]["count"] + 1
            assert (entry["width"], entry["height"]) == (size, size)
            assert (folder / "images" / entry["file_name"]).is_file()
            for ann in anns:
                assert ann["iscrowd"] == 0 and ann["category_id"] in coco.cats
                assert set(ann["attributes"]) == set(fs.OBJECT_FACTORS) - {factor}
                polygon = np.array(ann["segmentation"][0]).reshape(-1, 2)
                assert polygon.min() >= 0 and polygon.max() <= size
                mask = coco.annToMask(ann).astype(bool)
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                # 1 px tolerance for rounding
                assert xs.min() >= x - 1 and xs.max() + 1 <= x + w + 1
                assert ys.min() >= y - 1 and ys.max() + 1 <= y + h + 1
                relative.append(abs(mask.sum() - ann["area"]) / ann["area"])
        assert np.median(relative) < 0.05
        anns = sorted(coco.loadAnns(coco.getAnnIds()), key=lambda a: a["id"])
        if key == "shape":
            shape_anns = anns
        else:  # same boxes, category = that factor, which the shape file lists as an attribute
            assert [a["bbox"] for a in anns] == [a["bbox"] for a in shape_anns]
            assert [a["category_id"] for a in anns] == [
                a["attributes"][factor] + 1 for a in shape_anns
            ]
    first = fs.render_sample(split, "val", 0)
    assert np.array_equal(dataset[0][0].permute(1, 2, 0).numpy(), first[0])


def test_coco_files_reject_classification_folders(tmp_path):
    folder = fs.ensure_split(tmp_path, "cls-rot", "test", n=4, image_size=32, progress=False)
    with pytest.raises(DataError, match="det, det-upright"):
        fs.coco_files(folder)


def test_object_scale_enlarges_objects_keeps_labels_and_gets_its_own_cache(tmp_path):
    for index in range(40):
        plain = fs.sample_scene("cls-upright", "train", index, 64)
        large = fs.sample_scene("cls-upright", "train", index, 64, object_scale=1.25)
        assert large.labels == plain.labels
        obj = large.objects[0]
        target = fs.SIZE_FRACTIONS["cls"][obj.size] * 1.25 * 64
        assert abs(obj.radius - target) <= fs.SIZE_JITTER * 64 + 1e-9
        assert obj.radius > plain.objects[0].radius
        assert (
            max(obj.cx, obj.cy) <= 64 - obj.radius - 1 + 1e-9
            and min(obj.cx, obj.cy) >= obj.radius + 1 - 1e-9
        )
    folder = fs.ensure_split(
        tmp_path, "cls-upright", "train", n=8, image_size=32, progress=False, object_scale=1.25
    )
    assert folder.parent.name == "cls-upright-32px-scale1.25"
    assert json.loads((folder / "meta.json").read_text())["object_scale"] == 1.25
    image, _ = fs.render_sample("cls-upright", "train", 3, 32, object_scale=1.25)
    assert np.array_equal(np.load(folder / "images.npy")[3], image)
    plain = fs.ensure_split(tmp_path, "cls-upright", "train", n=8, image_size=32, progress=False)
    assert "object_scale" not in json.loads((plain / "meta.json").read_text())


def test_object_scale_rejects_det_splits_and_objects_that_do_not_fit():
    with pytest.raises(DataError, match="pretrain/cls splits only"):
        fs.sample_scene("det", "train", 0, 128, object_scale=1.25)
    with pytest.raises(DataError, match=r"object_scale must be in \(0, 1.30\] at 64 px"):
        fs.sample_scene("cls-rot", "train", 0, 64, object_scale=1.5)
