"""FactorShapes cache: each part rendered once, in parallel, into a folder written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.data.base import DataError
from core.data.factorshapes.coco import coco_dict, coco_keys
from core.data.factorshapes.draw import render_sample
from core.data.factorshapes.scene import (
    COCO_FACTORS,
    DEFAULT_COUNTS,
    DET_LABELS,
    DET_SPLITS,
    FACTORS,
    GEN_VERSION,
    check_scale,
    check_split,
    resolve_image_size,
)
from core.io import TMP_PREFIX, sha256_file
from core.logs import progress_disabled

log = logging.getLogger("core.data")


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
    check_split(split, part)
    n = DEFAULT_COUNTS[(split, part)] if n is None else int(n)
    size = resolve_image_size(split, image_size)
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
    # numpy's stub checks **kwds against allow_pickle (a bool) too
    np.savez(tmp / "labels.npz", **labels, bbox=bbox)  # type: ignore[arg-type]
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
        # numpy's stub checks **kwds against allow_pickle (a bool) too
        **{  # type: ignore[arg-type]
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


def _build_atomically(
    final: Path, expected: dict[str, Any], generate: Callable[[Path], None]
) -> None:
    """Clear what an earlier attempt left at ``final``, run ``generate`` on a temporary folder
    beside it and rename that to ``final``."""
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
        generate(tmp)
        os.rename(tmp, final)
    except OSError:
        # otherwise another process finished the same folder first
        if not _is_complete(final, expected):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    check_split(split, part)
    n, size = (
        DEFAULT_COUNTS[(split, part)] if n is None else int(n),
        resolve_image_size(split, image_size),
    )
    if n < 1:
        raise DataError(f"FactorShapes n must be positive, got {n}")
    object_scale = check_scale(split, object_scale, size)
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
    if not _is_complete(final, expected):
        workers = workers or min(4, os.cpu_count() or 1)
        _build_atomically(
            final,
            expected,
            lambda tmp: _generate(tmp, split, part, n, size, seed, workers, progress, object_scale),
        )
    return final
