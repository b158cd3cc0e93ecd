"""Downstream costs on the CPU: feature extraction, the 9 linear probes, a detection training
iteration.

- Feature extraction (img/s): ``downstream.classification.features.extract`` with the embedded
  backbone (ResNet-18 at base width 16, random init: weights do not change the cost) on FactorShapes
  cls-upright test images, the evaluation transform and batch of
  ``configs/classification/linear_knn_shapes.yaml``.
- Linear probe (s): the ``linear-lbfgs`` protocol (L2 grid on val, refit on train + val) of each of
  the 9 factor tasks, on that backbone's features of the full parts (the floor's features: what
  `make eval-cls` probes for it), with the config's grid and iteration cap.
- Detection (s per training iteration): the ``embedded-frcnn`` card, random-init backbone, a handful
  of iterations through mmengine's Runner (its IterTimerHook's per-iteration times, data loading
  included), on a small FactorShapes det part (iteration cost does not depend on the part's size).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from bench.timing import ROOT, Options, interleaved, summary
from core import markdown as md
from core.checkpoints import random_backbone
from core.config import load_config
from core.data.transforms import resize_center_crop
from downstream.classification.config import ClassificationConfig
from downstream.classification.features import extract
from downstream.classification.linear import linear_probe
from downstream.classification.tasks import build_part, resolve_tasks

TITLE = "Downstream (CPU)"
CLS_CONFIG = "configs/classification/linear_knn_shapes.yaml"
ARCH = ("resnet18", 16)  # the embedded backbone
DET_PROTOCOL = "embedded-frcnn"


class FirstImages(torch.utils.data.Dataset):
    """The first ``count`` items of a data set, keeping its ``label_names`` (what ``extract``
    reads)."""

    def __init__(self, dataset, count: int):
        self.dataset, self.count = dataset, min(count, len(dataset))
        self.label_names = dataset.label_names

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.dataset[index]


def classification_config(opts: Options) -> ClassificationConfig:
    overrides = [f"data.root={opts.data_root}"] if opts.data_root else []
    if opts.quick:
        overrides += ["data.n=48", "lbfgs.max_iter=20", "lbfgs.l2_grid=[1.0e-3,1.0]"]
    return load_config(ClassificationConfig, ROOT / CLS_CONFIG, overrides)


def time_extraction(
    backbone: torch.nn.Module, cfg: ClassificationConfig, count: int, repeats: int
) -> dict[str, object]:
    """img/s of ``extract`` over the first ``count`` test images of the first task's split."""
    transform = resize_center_crop(cfg.data.image_size, cfg.resize_ratio)
    images = FirstImages(build_part(cfg.data, "test", transform), count)
    samples = interleaved(
        {"extract": lambda: extract(backbone, images, cfg.batch_size, "cpu")}, repeats
    )
    stats = summary(samples["extract"])
    return {
        "images": len(images),
        "batch_size": cfg.batch_size,
        "img_per_s": len(images) / stats["median_s"],
        **stats,
    }


def task_features(
    backbone: torch.nn.Module, tasks, cfg: ClassificationConfig
) -> tuple[dict, float]:
    """Features and labels of every part of every split the tasks use, and the seconds it took."""
    transform = resize_center_crop(cfg.data.image_size, cfg.resize_ratio)
    start = time.perf_counter()
    features = {}
    for task in tasks:
        split = task.data.split
        if split not in features:
            features[split] = {
                part: extract(
                    backbone, build_part(task.data, part, transform), cfg.batch_size, "cpu"
                )
                for part in ("train", "val", "test")
            }
    return features, time.perf_counter() - start


def time_probes(
    features: dict, tasks, cfg: ClassificationConfig, repeats: int
) -> list[dict[str, object]]:
    """Seconds of ``linear_probe`` for each task: median over ``repeats`` after one warm-up
    probe."""

    def probe(task) -> None:
        parts = features[task.data.split]
        linear_probe(
            *((parts[p][0], parts[p][1][task.label]) for p in ("train", "val", "test")),
            task.classes,
            tuple(cfg.lbfgs.l2_grid),
            cfg.lbfgs.max_iter,
        )

    probe(tasks[0])  # warm-up: first calls into LBFGS and the kernels
    rows = []
    for task in tasks:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            probe(task)
            samples.append(time.perf_counter() - start)
        rows.append(
            {
                "task": f"{task.data.split}/{task.label}",
                "classes": task.classes,
                "n_train": len(features[task.data.split]["train"][0]),
                **summary(samples),
            }
        )
    return rows


def time_detection(opts: Options, iterations: int, warmup: int) -> dict[str, object]:
    """Seconds per training iteration of the card (random-init backbone), after ``warmup``
    iterations."""
    from mmengine.runner import Runner

    from downstream.detection.runner import data_parts, load_card, mmengine_config

    total = warmup + iterations
    card = load_card(
        DET_PROTOCOL,
        {
            "max_iters": total,
            "warmup_iters": 1,
            "milestones": [total + 1],
            "data.n": 16 if opts.quick else 64,
        },
    )
    if opts.quick:
        card.batch_size = 2
    parts = data_parts(card, opts.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = mmengine_config(card, parts, *ARCH, None, tmp, seed=0)
        cfg.default_hooks.checkpoint = None  # nothing to keep
        cfg.log_level = "WARNING"
        runner = Runner.from_cfg(cfg)
        runner.train()
        times = runner.message_hub.get_scalar("train/time").data[0].tolist()
    timed = times[warmup:]
    return {
        "protocol": DET_PROTOCOL,
        "batch_size": card.batch_size,
        "image_scale": list(card.image_scale),
        "warmup_iters": warmup,
        "timed_iters": len(timed),
        "iter_s": statistics.median(timed),
        "img_per_s": card.batch_size / statistics.median(timed),
        "samples_s": timed,
    }


def run(opts: Options) -> dict[str, object]:
    cfg = classification_config(opts)
    backbone = random_backbone(*ARCH, seed=0).model
    tasks = resolve_tasks(cfg.data, cfg.tasks)
    repeats = opts.reps(3)
    extraction = time_extraction(backbone, cfg, 32 if opts.quick else 2048, repeats)
    features, extract_all_s = task_features(backbone, tasks, cfg)
    probes = time_probes(features, tasks, cfg, opts.reps(3))
    detection = time_detection(opts, 2 if opts.quick else 10, 1 if opts.quick else 3)
    return {
        "arch": f"{ARCH[0]}w{ARCH[1]}",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "extraction": extraction,
        "extract_all_parts_s": extract_all_s,
        "linear_probe": {
            "l2_grid": list(cfg.lbfgs.l2_grid),
            "max_iter": cfg.lbfgs.max_iter,
            "tasks": probes,
            "total_s": sum(row["median_s"] for row in probes),
        },
        "detection": detection,
    }


def markdown(result: dict[str, object]) -> str:
    ext, probe, det = result["extraction"], result["linear_probe"], result["detection"]
    figures = [
        [f"feature extraction, batch {ext['batch_size']}", f"{ext['img_per_s']:.0f} img/s"],
        [
            "features of every part the 9 tasks use (one backbone)",
            f"{result['extract_all_parts_s']:.1f} s",
        ],
        ["linear probe (linear-lbfgs), 9 tasks", f"{probe['total_s']:.1f} s"],
        [
            f"detection ({det['protocol']}, batch {det['batch_size']}) training iteration",
            f"{det['iter_s']:.3f} s ({det['img_per_s']:.1f} img/s)",
        ],
    ]
    tasks = [
        [row["task"], str(row["classes"]), str(row["n_train"]), f"{row['median_s']:.2f}"]
        for row in probe["tasks"]
    ]
    lines = [
        f"Backbone {result['arch']} (random init), {result['threads']} threads; medians of "
        f"{result['repeats']} repeats.",
        "",
        *md.table(["figure", "value"], figures),
        "",
        *md.table(["probe task", "classes", "train images", "seconds"], tasks),
    ]
    return "\n".join(lines)
