"""FactorShapes drawing: polygons, backgrounds and textures rendered into an image."""

from __future__ import annotations

import colorsys
import functools
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.data.factorshapes.scene import (
    BG_POOL_SEED,
    CANONICAL,
    LIGHT_GAIN,
    SUPERSAMPLE,
    TEXTURE_AMPLITUDE,
    TEXTURE_MEAN,
    ObjectSpec,
    Scene,
    sample_scene,
)


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
                Image.fromarray(grid).resize((width, width), Image.Resampling.BICUBIC),
                dtype=np.float64,
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
