"""FactorShapes: the embedded, generated data set (specified in factorshapes.md, the FactorShapes
design note).

Each image shows one polygon (``cls`` splits, ``pretrain``) or 1-6 polygons (``det`` splits) on a
background from a fixed pool of 16. Nine factors are drawn independently and uniformly, each one
removed by one standard SSL augmentation: ``shape`` (8), ``hue`` (8), ``orient`` (8), ``chiral``
(2), ``texture`` (4), ``size`` (3), ``pos`` (4), ``bg`` (4) and ``light`` (3).

Splits: ``pretrain`` (each image upright or rotated with p=0.5, recorded as ``upright``),
``cls-upright`` (angle 0 +/-10 deg; the flip probe is ``chiral``), ``cls-rot`` (8 orientation bins;
the rotation probe is ``orient``), ``det`` (1-6 objects, 8 bins) and ``det-upright`` (1-6 upright
objects, with a chirality COCO file).

Every image is a pure function of ``(seed, split, part, index)``: its generator is
``np.random.default_rng([seed, split_id, part_id, index])``, no global RNG is touched, so images can
be rendered alone (``render_sample``) or in any number of processes with identical results.
``ensure_split`` renders a part once into a cache folder (written atomically) and
``FactorShapesDataset`` reads it. Changing anything that alters pixels or labels requires bumping
``GEN_VERSION``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from core.data.base import DataError, ImageDataset, Transform, pil_to_tensor, require_path
from core.io import TMP_PREFIX, sha256_file
from core.logs import progress_disabled

log = logging.getLogger("core.data")

#: Version of the renderer: part of the cache path; the tests pin image hashes for it.
GEN_VERSION: int = 1

SPLITS: tuple[str, ...] = ("pretrain", "cls-upright", "cls-rot", "det", "det-upright")
DET_SPLITS: tuple[str, ...] = ("det", "det-upright")
PARTS: dict[str, tuple[str, ...]] = {
    "pretrain": ("train",),
    "cls-upright": ("train", "val", "test"),
    "cls-rot": ("train", "val", "test"),
    "det": ("train", "val"),
    "det-upright": ("train", "val"),
}
_PART_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_COUNTS: dict[tuple[str, str], int] = {
    ("pretrain", "train"): 10_000,
    **{
        (s, p): c
        for s in ("cls-upright", "cls-rot")
        for p, c in zip(PARTS[s], (10_000, 2_000, 2_000))
    },
    **{(s, p): c for s in DET_SPLITS for p, c in zip(PARTS[s], (2_000, 500))},
}
DEFAULT_IMAGE_SIZE: dict[str, int] = {
    "pretrain": 64,
    "cls-upright": 64,
    "cls-rot": 64,
    "det": 128,
    "det-upright": 128,
}
#: Smallest canvases: quadrants need room for the largest object; six det objects need room to be
#: placed.
MIN_IMAGE_SIZE: dict[str, int] = {
    "pretrain": 16,
    "cls-upright": 16,
    "cls-rot": 16,
    "det": 48,
    "det-upright": 48,
}

FACTORS: dict[str, int] = {
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
#: Factors that belong to one object (the ``attributes`` of a COCO annotation).
OBJECT_FACTORS: tuple[str, ...] = ("shape", "hue", "orient", "chiral", "texture", "size")
#: Image-level labels of the det splits; ``count`` class k means k + 1 objects.
DET_LABELS: dict[str, int] = {"count": 6, "bg": 4, "light": 3}
LABELS_BY_SPLIT: dict[str, tuple[str, ...]] = {
    "pretrain": tuple(FACTORS),
    "cls-upright": ("shape", "hue", "chiral", "texture", "size", "pos", "bg", "light"),
    "cls-rot": ("shape", "hue", "orient", "texture", "size", "pos", "bg", "light"),
    "det": tuple(DET_LABELS),
    "det-upright": tuple(DET_LABELS),
}
#: The nine linear-probe tasks: every cls-upright label, plus orientation on cls-rot.
FACTOR_TASKS: tuple[tuple[str, str], ...] = (
    *(("cls-upright", label) for label in LABELS_BY_SPLIT["cls-upright"]),
    ("cls-rot", "orient"),
)

# Canonical polygons (section 5 of the spec), in label order; centred on the vertex mean, unit
# circumradius.
SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "scalene": ((-1, -0.6), (1, -0.6), (-0.75, 0.9)),
    "trapezoid": ((-1, -0.55), (1, -0.55), (0, 0.55), (-1, 0.55)),
    "ell": ((-0.9, -1), (-0.3, -1), (-0.3, 0.4), (0.9, 0.4), (0.9, 1), (-0.9, 1)),
    "eff": (
        (-0.8, -1),
        (0.9, -1),
        (0.9, -0.5),
        (-0.2, -0.5),
        (-0.2, -0.1),
        (0.5, -0.1),
        (0.5, 0.4),
        (-0.2, 0.4),
        (-0.2, 1),
        (-0.8, 1),
    ),
    "flag": ((-0.8, -1), (-0.3, -1), (-0.3, -0.9), (1, -0.45), (-0.3, 0), (-0.3, 1), (-0.8, 1)),
    "house": (
        (-0.8, 1),
        (0.8, 1),
        (0.8, 0),
        (0, -0.8),
        (-0.35, -0.45),
        (-0.35, -0.95),
        (-0.65, -0.95),
        (-0.65, -0.15),
        (-0.8, 0),
    ),
    "harpoon": ((-1, -0.15), (0.4, -0.15), (0.1, -0.8), (1, 0.15), (-1, 0.15)),
    "bolt": (
        (-0.2, -1),
        (0.6, -1),
        (0.15, -0.15),
        (0.7, -0.15),
        (-0.5, 1),
        (-0.05, 0.2),
        (-0.6, 0.2),
    ),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)

# circumradius / image width
SIZE_FRACTIONS = {
    "cls": (0.20, 0.28, 0.36),
    "det": (0.08, 0.11, 0.15),
}
SIZE_JITTER = 0.015  # +/- fraction of the width
HUE_JITTER = 0.025  # +/- turns (9 deg, a fifth of the 45-deg bin)
ANGLE_JITTER = 10.0  # +/- degrees around the bin centre (inside the 45-deg bin)
LIGHT_GAIN = (0.55, 0.78, 1.0)
TEXTURE_MEAN, TEXTURE_AMPLITUDE = 0.65, 0.35  # every texture takes values 0.3 / 1.0 (solid: 0.65)
SUPERSAMPLE = 4
BG_POOL_SEED = 1000
MAX_OBJECTS = 6

COCO_FACTORS: dict[str, str] = {
    "shape": "shape",
    "color": "hue",
    "orient": "orient",
    "chiral": "chiral",
}
CATEGORY_NAMES: dict[str, tuple[str, ...]] = {
    "shape": SHAPE_NAMES,
    "hue": tuple(f"hue{45 * k:03d}" for k in range(8)),
    "orient": tuple(f"orient{45 * k:03d}" for k in range(8)),
    "chiral": ("canonical", "mirrored"),
}


def _canonical(vertices: Iterable[tuple[float, float]]) -> np.ndarray:
    points = np.asarray(vertices, dtype=np.float64)
    points = points - points.mean(axis=0)
    return points / np.linalg.norm(points, axis=1).max()


CANONICAL: tuple[np.ndarray, ...] = tuple(_canonical(v) for v in SHAPES.values())


# ---------------------------------------------------------------------------------------------
# scene model
@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One polygon: its factor labels and the continuous values drawn for it (pixels, degrees,
    turns)."""

    shape: int
    hue: int
    orient: int
    chiral: int
    texture: int
    size: int
    angle: float  # counter-clockwise, degrees
    radius: float  # circumradius, pixels
    hue_turns: float  # actual hue in [0, 1)
    sat: float
    val: float
    speckle_seed: int
    phase_u: float  # texture offsets along the object's axes (pixels), so every class averages 0.65
    phase_v: float
    cx: float = 0.0
    cy: float = 0.0

    def factors(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in OBJECT_FACTORS}


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything needed to render one image; rendering draws no further random numbers."""

    image_size: int
    objects: tuple[ObjectSpec, ...]
    bg: int
    bg_variant: int
    light: int
    labels: dict[str, int]


def _check_split(split: str, part: str | None = None) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown FactorShapes split '{split}'; valid splits: {', '.join(SPLITS)}")
    if part is not None and part not in PARTS[split]:
        raise DataError(
            f"unknown part '{part}' for FactorShapes split '{split}'; valid parts: "
            f"{', '.join(PARTS[split])}"
        )


def _check_scale(split: str, object_scale: float, width: int) -> float:
    """``object_scale`` multiplies the single-object sizes (a generator lever, docs/defaults.md);
    the largest object must still fit in one quadrant."""
    object_scale = float(object_scale)
    if object_scale == 1.0:
        return object_scale
    if split in DET_SPLITS:
        raise DataError(
            f"FactorShapes object_scale applies to pretrain/cls splits only; {split} needs 1.0"
        )
    largest = (SIZE_FRACTIONS["cls"][-1] * object_scale + SIZE_JITTER) * width
    if object_scale <= 0 or largest + 1 > width / 2:
        limit = ((width / 2 - 1) / width - SIZE_JITTER) / SIZE_FRACTIONS["cls"][-1]
        raise DataError(
            f"FactorShapes object_scale must be in (0, {limit:.2f}] at {width} px so that the "
            f"largest object fits in a quadrant, got {object_scale}"
        )
    return object_scale


def _image_size(split: str, image_size: int | None) -> int:
    size = DEFAULT_IMAGE_SIZE[split] if image_size is None else int(image_size)
    if size < MIN_IMAGE_SIZE[split]:
        raise DataError(
            f"FactorShapes {split} image_size must be at least {MIN_IMAGE_SIZE[split]} px, got "
            f"{size}"
        )
    return size


def sample_rng(split: str, part: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of one image: a function of ``(seed, split, part, index)`` only."""
    _check_split(split, part)
    if seed < 0 or index < 0:
        raise DataError(
            f"FactorShapes seed and index must be non-negative, got seed={seed}, index={index}"
        )
    return np.random.default_rng([seed, SPLITS.index(split), _PART_IDS[part], index])


def _sample_object(
    rng: np.random.Generator, upright: bool, size_fractions: tuple[float, ...], width: int
) -> ObjectSpec:
    """Factor labels and appearance of one object, centre not yet placed."""
    shape, hue = int(rng.integers(FACTORS["shape"])), int(rng.integers(FACTORS["hue"]))
    orient = 0 if upright else int(rng.integers(FACTORS["orient"]))
    chiral, texture = int(rng.integers(FACTORS["chiral"])), int(rng.integers(FACTORS["texture"]))
    size = int(rng.integers(FACTORS["size"]))
    # 12, 4: multiples of both periods
    return ObjectSpec(
        shape=shape,
        hue=hue,
        orient=orient,
        chiral=chiral,
        texture=texture,
        size=size,
        angle=orient * 45.0 + rng.uniform(-ANGLE_JITTER, ANGLE_JITTER),
        radius=(size_fractions[size] + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) * width,
        hue_turns=float((hue / FACTORS["hue"] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0),
        sat=rng.uniform(0.7, 1.0),
        val=rng.uniform(0.85, 1.0),
        speckle_seed=int(rng.integers(2**62)),
        phase_u=rng.uniform(0, 12.0),
        phase_v=rng.uniform(0, 4.0),
    )


def _quadrant_centre(
    rng: np.random.Generator, pos: int, radius: float, width: int
) -> tuple[float, float]:
    """A centre uniform over the part of quadrant ``pos`` (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) where the circumcircle stays 1 px inside the canvas."""

    def axis(half: int) -> float:
        low, high = (
            max(half * width / 2, radius + 1),
            min((half + 1) * width / 2, width - radius - 1),
        )
        return float(rng.uniform(low, high))

    return axis(pos % 2), axis(pos // 2)


def _place_disjoint(
    rng: np.random.Generator, radii: list[float], width: int, tries: int = 64, restarts: int = 500
) -> list[tuple[float, float]] | None:
    """Centres whose circumcircles lie 1 px inside the canvas and 1 px apart (rejection sampling; a
    restart redraws every centre when one object finds no room), or None when ``restarts`` all
    fail."""
    for _ in range(restarts):
        centres: list[tuple[float, float]] = []
        for radius in radii:
            candidates = rng.uniform(radius + 1, width - radius - 1, size=(tries, 2))
            ok = np.ones(tries, dtype=bool)
            for (qx, qy), q_radius in zip(centres, radii):
                ok &= (
                    np.hypot(candidates[:, 0] - qx, candidates[:, 1] - qy) >= radius + q_radius + 1
                )
            if not ok.any():
                break
            centres.append(tuple(float(c) for c in candidates[int(np.argmax(ok))]))
        else:
            return centres
    return None


def _sample_single(
    rng: np.random.Generator, split: str, width: int, object_scale: float = 1.0
) -> Scene:
    upright = split == "cls-upright" or (split == "pretrain" and bool(rng.random() < 0.5))
    obj = _sample_object(
        rng, upright, tuple(f * object_scale for f in SIZE_FRACTIONS["cls"]), width
    )
    pos = int(rng.integers(FACTORS["pos"]))
    cx, cy = _quadrant_centre(rng, pos, obj.radius, width)
    obj = dataclasses.replace(obj, cx=cx, cy=cy)
    bg, bg_variant, light = (int(rng.integers(k)) for k in (FACTORS["bg"], 4, FACTORS["light"]))
    labels = {**obj.factors(), "pos": pos, "bg": bg, "light": light}
    if split == "pretrain":
        labels["upright"] = int(upright)
    return Scene(width, (obj,), bg, bg_variant, light, labels)


def _sample_multi(rng: np.random.Generator, split: str, width: int) -> Scene:
    centres = None
    while centres is None:  # a draw that cannot be placed is redrawn (rare: < 1 in 3000 at 32 px)
        count = int(rng.integers(1, MAX_OBJECTS + 1))
        objects = [
            _sample_object(rng, split == "det-upright", SIZE_FRACTIONS["det"], width)
            for _ in range(count)
        ]
        objects.sort(key=lambda o: -o.radius)  # largest first: rejection sampling succeeds sooner
        centres = _place_disjoint(rng, [o.radius for o in objects], width)
    objects = [dataclasses.replace(o, cx=cx, cy=cy) for o, (cx, cy) in zip(objects, centres)]
    bg, bg_variant, light = (int(rng.integers(k)) for k in (FACTORS["bg"], 4, FACTORS["light"]))
    return Scene(
        width, tuple(objects), bg, bg_variant, light, {"count": count - 1, "bg": bg, "light": light}
    )


def sample_scene(
    split: str,
    part: str,
    index: int,
    image_size: int | None = None,
    seed: int = 0,
    object_scale: float = 1.0,
) -> Scene:
    """The scene of one image (all random draws happen here; rendering is deterministic given the
    scene)."""
    rng = sample_rng(split, part, index, seed)
    width = _image_size(split, image_size)
    if split in DET_SPLITS:
        _check_scale(split, object_scale, width)
        return _sample_multi(rng, split, width)
    return _sample_single(rng, split, width, _check_scale(split, object_scale, width))


def sample_labels(
    split: str, part: str, index: int, image_size: int | None = None, seed: int = 0
) -> dict[str, int]:
    """The labels ``render_sample`` would return, without rendering (fast)."""
    return dict(sample_scene(split, part, index, image_size, seed).labels)


# ---------------------------------------------------------------------------------------------
# rendering
def object_polygon(obj: ObjectSpec) -> np.ndarray:
    """Image-frame vertices (K x 2, x right, y down): mirror if chiral, rotate CCW, scale,
    translate."""
    points = CANONICAL[obj.shape]
    x = -points[:, 0] if obj.chiral else points[:, 0]
    y = points[:, 1]
    c, s = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
    return np.stack(
        [obj.cx + (c * x - s * y) * obj.radius, obj.cy - (s * x + c * y) * obj.radius], axis=1
    )


def _hsv(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val))


@functools.lru_cache(maxsize=64)
def background(width: int, kind: int, variant: int) -> np.ndarray:
    """Pool background ``(kind, variant)`` (H x W x 3 float in [0, 1], read-only): flat, linear
    gradient, smooth noise or coarse stripes between two desaturated, dark colours. The pool is the
    same for every seed."""
    rng = np.random.default_rng([BG_POOL_SEED, kind, variant])
    colours = [_hsv(rng.random(), rng.uniform(0, 0.45), rng.uniform(0.25, 0.5)) for _ in range(2)]
    yy, xx = (np.mgrid[0:width, 0:width] + 0.5) / width
    if kind == 0:
        t = np.zeros((width, width))
    elif kind == 1:
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / np.ptp(t)
    elif kind == 2:
        grid = (rng.random((5, 5)) * 255).astype(np.uint8)
        t = (
            np.asarray(
                Image.fromarray(grid).resize((width, width), Image.BICUBIC), dtype=np.float64
            )
            / 255
        )
    else:
        a, period = rng.uniform(0, math.pi), rng.uniform(0.2, 0.3)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period)
    image = colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]
    image.setflags(write=False)
    return image


def texture_field(obj: ObjectSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Texture value (0.3 or 1.0; solid 0.65) at image points ``x, y`` (pixels, broadcastable
    grids).

    Stripes (period 3 px) and checker (2 px cells) live in the object frame, turn with the object
    and have a random phase; speckle is one random bit per output pixel. Every kind has expected
    mean 0.65 over any region, so only fine structure differs.
    """
    shape = np.broadcast_shapes(x.shape, y.shape)
    if obj.texture == 0:
        return np.full(shape, TEXTURE_MEAN)
    if obj.texture == 3:
        ix, iy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        x0, y0 = int(ix.min()), int(iy.min())
        bits = np.random.default_rng(obj.speckle_seed).random(
            (int(iy.max()) - y0 + 1, int(ix.max()) - x0 + 1)
        )
        on = bits[iy - y0, ix - x0] < 0.5
    else:
        dx, dy = x - obj.cx, obj.cy - y
        c, s = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
        u, v = c * dx + s * dy, -s * dx + c * dy  # rotate back into the object frame
        u, v = (-u if obj.chiral else u) + obj.phase_u, v + obj.phase_v
        on = (
            np.floor(u / 1.5) % 2 == 1
            if obj.texture == 1
            else (np.floor(u / 2) + np.floor(v / 2)) % 2 == 1
        )
    return np.broadcast_to(TEXTURE_MEAN + TEXTURE_AMPLITUDE * np.where(on, 1.0, -1.0), shape)


def _object_window(polygon: np.ndarray, width: int) -> tuple[int, int, int, int]:
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 1, width)
    return int(x0), int(y0), int(x1), int(y1)


def draw_object(canvas: np.ndarray, obj: ObjectSpec, polygon: np.ndarray) -> int:
    """Composite one object onto ``canvas`` (4x4 supersampled inside its window); return its area
    (pixels with coverage > 0.5)."""
    ss, (x0, y0, x1, y1) = SUPERSAMPLE, _object_window(polygon, canvas.shape[1])
    w, h = x1 - x0, y1 - y0
    mask = Image.new("L", (w * ss, h * ss), 0)
    # A sub-pixel k covers [k, k+1); Pillow puts pixel centres on integers, hence the -0.5.
    ImageDraw.Draw(mask).polygon([tuple(p) for p in (polygon - (x0, y0)) * ss - 0.5], fill=255)
    cover = np.asarray(mask, dtype=np.float64) / 255
    sub = (np.arange(w * ss) + 0.5) / ss + x0, (np.arange(h * ss) + 0.5) / ss + y0
    value = cover * texture_field(obj, sub[0][None, :], sub[1][:, None])

    def down(a: np.ndarray) -> np.ndarray:
        return a.reshape(h, ss, w, ss).mean(axis=(1, 3))

    alpha, value = down(cover), down(value)
    window = canvas[y0:y1, x0:x1]
    window[:] = window * (1 - alpha[..., None]) + value[..., None] * _hsv(
        obj.hue_turns, obj.sat, obj.val
    )
    return int((alpha > 0.5).sum())


def render_scene(scene: Scene) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The H x W x 3 uint8 image of ``scene`` and one annotation per object (factors, geometry,
    polygon, bbox xywh, area)."""
    canvas = background(scene.image_size, scene.bg, scene.bg_variant).copy()
    annotations = []
    for obj in scene.objects:
        polygon = object_polygon(obj)
        area = draw_object(canvas, obj, polygon)
        (px0, py0), (px1, py1) = polygon.min(axis=0), polygon.max(axis=0)
        annotations.append(
            {
                **obj.factors(),
                "angle": obj.angle,
                "radius": obj.radius,
                "center": [obj.cx, obj.cy],
                "polygon": polygon.ravel().tolist(),
                "bbox": [float(px0), float(py0), float(px1 - px0), float(py1 - py0)],
                "area": area,
            }
        )
    image = np.clip(canvas * LIGHT_GAIN[scene.light], 0.0, 1.0)
    return (image * 255 + 0.5).astype(np.uint8), annotations


def render_sample(
    split: str,
    part: str,
    index: int,
    image_size: int | None = None,
    seed: int = 0,
    object_scale: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Image ``index`` of ``split/part`` (H x W x 3 uint8) and its record ``{"labels", "objects",
    "image_size"}``, regenerated from ``(seed, split, part, index)`` alone."""
    scene = sample_scene(split, part, index, image_size, seed, object_scale)
    image, objects = render_scene(scene)
    return image, {"labels": dict(scene.labels), "objects": objects, "image_size": scene.image_size}


# ---------------------------------------------------------------------------------------------
# cache
def cache_dir(
    root: str | Path,
    split: str,
    part: str,
    n: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    object_scale: float = 1.0,
) -> Path:
    """``root/factorshapes-v{GEN_VERSION}/seed{seed}/{split}-{size}px[-scale{s}]/{part}-{n}``."""
    _check_split(split, part)
    n = DEFAULT_COUNTS[(split, part)] if n is None else int(n)
    size = _image_size(split, image_size)
    version_dir = Path(root).expanduser() / f"factorshapes-v{GEN_VERSION}"
    scale = "" if float(object_scale) == 1.0 else f"-scale{float(object_scale):g}"
    return version_dir / f"seed{seed}" / f"{split}-{size}px{scale}" / f"{part}-{n}"


def _chunk_job(
    job: tuple[str, str, int, int, int, int, str | None, float],
) -> tuple[int, np.ndarray | None, list[dict[str, Any]], list[bytes]]:
    """Render images ``start..stop-1``; det images are written as PNG into ``png_dir`` (not
    returned)."""
    split, part, seed, size, start, stop, png_dir, object_scale = job
    images, records, digests = [], [], []
    for index in range(start, stop):
        image, record = render_sample(split, part, index, size, seed, object_scale)
        digests.append(hashlib.sha256(image.tobytes()).digest())
        records.append(record)
        if png_dir is None:
            images.append(image)
        else:
            Image.fromarray(image).save(Path(png_dir) / f"{index:06d}.png")
    return start, (np.stack(images) if images else None), records, digests


def _run_jobs(jobs: list[tuple], workers: int, bar: tqdm) -> Iterator[tuple]:
    """Chunk results in order, from a process pool when there is more than one chunk and worker."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _chunk_job(job)
            bar.update(job[5] - job[4])
        return
    with multiprocessing.get_context().Pool(min(workers, len(jobs))) as pool:
        for result, job in zip(pool.imap(_chunk_job, jobs), jobs):
            bar.update(job[5] - job[4])
            yield result


def _write_single(
    tmp: Path, split: str, n: int, size: int, results: Iterator[tuple]
) -> dict[str, Any]:
    images = np.lib.format.open_memmap(
        tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
    )
    names = [*FACTORS, *(["upright"] if split == "pretrain" else [])]
    labels = {name: np.zeros(n, dtype=np.int64) for name in names}
    bbox = np.zeros((n, 4), dtype=np.float32)
    for start, chunk, records, _ in results:
        images[start : start + len(chunk)] = chunk
        for offset, record in enumerate(records):
            for name in names:
                labels[name][start + offset] = record["labels"][name]
            bbox[start + offset] = record["objects"][0]["bbox"]
    images.flush()
    del images
    np.savez(tmp / "labels.npz", **labels, bbox=bbox)
    return {
        "labels": {name: FACTORS.get(name, 2) for name in names},
        "images_sha256": sha256_file(tmp / "images.npy"),
    }


def _write_det(
    tmp: Path, split: str, part: str, size: int, results: Iterator[tuple]
) -> dict[str, Any]:
    records, digest = [], hashlib.sha256()
    for _, _, chunk_records, digests in results:
        records.extend(chunk_records)
        for d in digests:
            digest.update(d)
    (tmp / "annotations").mkdir()
    for key in coco_keys(split):
        coco = coco_dict(
            records, COCO_FACTORS[key], size, f"FactorShapes v{GEN_VERSION} {split}/{part}"
        )
        (tmp / "annotations" / f"instances_{key}.json").write_text(json.dumps(coco))
    np.savez(
        tmp / "labels.npz",
        **{
            name: np.array([r["labels"][name] for r in records], dtype=np.int64)
            for name in DET_LABELS
        },
    )
    return {
        "labels": dict(DET_LABELS),
        "images_sha256": digest.hexdigest(),
        "images_sha256_of": "the per-image sha256 digests of the raw RGB pixels, in index order",
    }


def _generate(
    tmp: Path,
    split: str,
    part: str,
    n: int,
    size: int,
    seed: int,
    workers: int,
    progress: bool,
    object_scale: float = 1.0,
) -> None:
    det = split in DET_SPLITS
    if det:
        (tmp / "images").mkdir()
    chunk = max(16, min(256, math.ceil(n / (4 * max(workers, 1)))))
    jobs = [
        (
            split,
            part,
            seed,
            size,
            start,
            min(start + chunk, n),
            str(tmp / "images") if det else None,
            object_scale,
        )
        for start in range(0, n, chunk)
    ]
    disable = not progress or progress_disabled()
    with tqdm(
        total=n,
        desc=f"FactorShapes {split}/{part}",
        unit="img",
        disable=disable,
        dynamic_ncols=True,
        mininterval=1.0,
    ) as bar:
        results = _run_jobs(jobs, workers, bar)
        extra = (
            _write_det(tmp, split, part, size, results)
            if det
            else _write_single(tmp, split, n, size, results)
        )
    meta = {
        "gen_version": GEN_VERSION,
        "seed": seed,
        "split": split,
        "part": part,
        "n": n,
        "image_size": size,
        **_scale_meta(object_scale),
        **extra,
    }
    # written last: marks a complete folder
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _scale_meta(object_scale: float) -> dict[str, float]:
    """Recorded only when not 1, so that the default caches keep their meta."""
    return {} if float(object_scale) == 1.0 else {"object_scale": float(object_scale)}


def _is_complete(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return all(meta.get(key) == value for key, value in expected.items())


def _remove_stale_temps(final: Path) -> None:
    """Delete temporary folders of ``final`` left by dead processes of this host."""
    prefix = f"{TMP_PREFIX}{final.name}-{socket.gethostname()}-"
    for tmp in final.parent.glob(f"{prefix}*"):
        try:
            os.kill(int(tmp.name[len(prefix) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def ensure_split(
    root: str | Path,
    split: str,
    part: str,
    n: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    object_scale: float = 1.0,
) -> Path:
    """Render ``split/part`` into the cache unless a complete copy is there; return its folder.

    Non-det folders hold ``images.npy`` (N x H x W x 3 uint8), ``labels.npz`` (one int64 array per
    label, ``bbox`` float32 N x 4 xywh) and ``meta.json``; det folders hold ``images/NNNNNN.png``,
    ``annotations/instances_{shape,color,orient[,chiral]}.json`` (COCO), ``labels.npz`` (count, bg,
    light) and ``meta.json``. The folder is built under a temporary name and renamed when complete,
    so a reader never sees half a cache; a folder without a matching ``meta.json`` is deleted and
    rebuilt. The images do not depend on ``workers`` (default ``min(4, cpu_count)``).
    """
    _check_split(split, part)
    n, size = DEFAULT_COUNTS[(split, part)] if n is None else int(n), _image_size(split, image_size)
    if n < 1:
        raise DataError(f"FactorShapes n must be positive, got {n}")
    object_scale = _check_scale(split, object_scale, size)
    final = cache_dir(root, split, part, n, size, seed, object_scale)
    expected = {
        "gen_version": GEN_VERSION,
        "seed": seed,
        "split": split,
        "part": part,
        "n": n,
        "image_size": size,
        "object_scale": _scale_meta(object_scale).get("object_scale"),
    }
    if _is_complete(final, expected):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    if final.exists():
        log.warning("removing incomplete FactorShapes cache %s", final)
        shutil.rmtree(final)
    tmp = (
        final.parent
        / f"{TMP_PREFIX}{final.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    tmp.mkdir()
    try:
        _generate(
            tmp,
            split,
            part,
            n,
            size,
            seed,
            workers or min(4, os.cpu_count() or 1),
            progress,
            object_scale,
        )
        os.rename(tmp, final)
    except OSError:
        # otherwise another process finished the same folder first
        if not _is_complete(final, expected):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------- COCO
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
    images, annotations = [], []
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


# --------------------------------------------------------------------------------------------- data
# set
class FactorShapesDataset(ImageDataset):
    """A cached FactorShapes part (generated on first use). Targets: the labels of
    ``LABELS_BY_SPLIT[split]`` as python ints (det: ``count`` class k = k + 1 objects; boxes are in
    ``coco_files(self.folder)``)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "pretrain",
        part: str = "train",
        n: int | None = None,
        image_size: int | None = None,
        seed: int = 0,
        transform: Transform | None = None,
        workers: int | None = None,
        progress: bool = True,
        object_scale: float = 1.0,
    ):
        super().__init__(transform)
        _check_split(split, part)
        self.split, self.part = split, part
        self.folder = ensure_split(
            root, split, part, n, image_size, seed, workers, progress, object_scale
        )
        self.meta = json.loads((self.folder / "meta.json").read_text())
        with np.load(self.folder / "labels.npz") as stored:
            self.labels = {name: stored[name] for name in LABELS_BY_SPLIT[split]}
        self.label_names = {name: (DET_LABELS | FACTORS)[name] for name in LABELS_BY_SPLIT[split]}
        self.images = (
            None if split in DET_SPLITS else np.load(self.folder / "images.npy", mmap_mode="r")
        )

    def __len__(self) -> int:
        return int(self.meta["n"])

    def _stored_targets(self, name: str) -> np.ndarray:
        return self.labels[name]

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.images is None:
            with Image.open(self.folder / "images" / f"{index:06d}.png") as png:
                image = pil_to_tensor(png)
        else:
            image = torch.from_numpy(np.array(self.images[index]).transpose(2, 0, 1).copy())
        return image, {name: int(values[index]) for name, values in self.labels.items()}
