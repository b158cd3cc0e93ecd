"""FactorShapes scenes: the factors, their label sets, the polygon table, and how one image's
objects and labels are drawn from ``(seed, split, part, index)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from core.data.base import DataError

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


def check_split(split: str, part: str | None = None) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown FactorShapes split '{split}'; valid splits: {', '.join(SPLITS)}")
    if part is not None and part not in PARTS[split]:
        raise DataError(
            f"unknown part '{part}' for FactorShapes split '{split}'; valid parts: "
            f"{', '.join(PARTS[split])}"
        )


def check_scale(split: str, object_scale: float, width: int) -> float:
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


def resolve_image_size(split: str, image_size: int | None) -> int:
    size = DEFAULT_IMAGE_SIZE[split] if image_size is None else int(image_size)
    if size < MIN_IMAGE_SIZE[split]:
        raise DataError(
            f"FactorShapes {split} image_size must be at least {MIN_IMAGE_SIZE[split]} px, got "
            f"{size}"
        )
    return size


def sample_rng(split: str, part: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of one image: a function of ``(seed, split, part, index)`` only."""
    check_split(split, part)
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
            x, y = candidates[int(np.argmax(ok))]
            centres.append((float(x), float(y)))
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
    width = resolve_image_size(split, image_size)
    if split in DET_SPLITS:
        check_scale(split, object_scale, width)
        return _sample_multi(rng, split, width)
    return _sample_single(rng, split, width, check_scale(split, object_scale, width))


def sample_labels(
    split: str, part: str, index: int, image_size: int | None = None, seed: int = 0
) -> dict[str, int]:
    """The labels ``render_sample`` would return, without rendering (fast)."""
    return dict(sample_scene(split, part, index, image_size, seed).labels)
