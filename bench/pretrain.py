"""Pretraining step throughput of vicreg, mast (pair) and mast (factorized), side by side in one run.

Each method's Trainer is built from the same config; one batch from its own data loader is kept, and the
training step (forward, loss, backward, optimiser) is timed on it. Methods are interleaved within every
repeat, so slow drifts of a shared machine hit all of them alike; each figure is the median over repeats
after warm-up steps. img/s counts source images (a factorized step renders K + 1 views of each).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.config import load_config
from pretrain.config import PretrainConfig
from pretrain.train import Trainer

VARIANTS = {
    "vicreg": ("configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml", []),
    "mast_pair": ("configs/pretrain/mast_r18w16_b128_16e_shapes.yaml", []),
    "mast_factorized": ("configs/pretrain/mast_r18w16_b128_16e_shapes.yaml", ["views.mode=factorized"]),
}


def _step_seconds(trainer: Trainer, batch, steps: int) -> float:
    if trainer.cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*batch)
    if trainer.cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def run(overrides: list[str], warmup: int = 3, steps: int = 5, repeats: int = 9) -> dict[str, object]:
    trainers, batches = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, extra) in VARIANTS.items():
            cfg = load_config(PretrainConfig, config, [*extra, *overrides])
            trainers[name] = Trainer(cfg, Path(tmp) / name)
            batches[name] = next(iter(trainers[name].loader))
            trainers[name].model.train()
        for name, trainer in trainers.items():
            _step_seconds(trainer, batches[name], warmup)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(repeats):
            for name, trainer in trainers.items():
                times[name].append(_step_seconds(trainer, batches[name], steps))
    results: dict[str, object] = {}
    for name, samples in times.items():
        batch = trainers[name].cfg.train.batch_size
        median = statistics.median(samples)
        results[name] = {"step_s": median, "img_per_s": batch / median, "views": trainers[name].views.num_views,
                         "samples_s": samples}
    base = results["vicreg"]["step_s"]
    for name in results:
        results[name]["step_time_vs_vicreg"] = results[name]["step_s"] / base
    return {"batch_size": trainers["vicreg"].cfg.train.batch_size, "warmup_steps": warmup,
            "steps_per_repeat": steps, "repeats": repeats, "overrides": overrides, "methods": results}


def markdown(result: dict[str, object]) -> str:
    lines = ["| method | views | step (s) | img/s | step time vs vicreg |", "|---|---|---|---|---|"]
    for name, row in result["methods"].items():
        lines.append(f"| {name} | {row['views']} | {row['step_s']:.3f} | {row['img_per_s']:.0f} | "
                     f"{row['step_time_vs_vicreg']:.3f} |")
    return "\n".join(lines)
