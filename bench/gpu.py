"""GPU figures (only with a CUDA device; otherwise the section records that it was skipped).

- Pretraining step of vicreg, mast (pair) and mast (factorized) on the embedded config and on
  ResNet-50 at 224 px (batch 64), in fp32 (contiguous tensors) and with bf16 autocast +
  channels_last: median step time, img/s, ratio to vicreg in the same mode (methods interleaved
  within every repeat), peak memory (``torch.cuda.max_memory_allocated`` above what was allocated
  before the method was built: weights, gradients, optimiser state, activations) and model FLOP
  utilisation: FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``, forward and
  backward) per second of step time, over the device's dense bf16 peak (a small table by device
  name; unknown devices give null).
- Data loader settings: pretraining's own loader (multi-view ``ViewDataset``, ``EpochSampler``) over
  where views are rendered (``views.render``: the loader's workers, or the device from the raw
  images the loader hands it) x num_workers x pin_memory x persistent_workers, two epochs each,
  batches copied to the device (non-blocking) and, for ``device``, rendered there; img/s of the
  second epoch (persistent workers skip its start-up) against the bf16 vicreg step's img/s: a
  setting keeps the GPU fed when it delivers at least that.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.pretrain import EMBEDDED, R50_DATA, RESNET50, build, run_steps, variants
from bench.timing import ROOT, Options, interleaved, paired_ratio, summary, sync
from core import markdown as md
from core.config import load_config
from core.data import build_dataset
from core.seeding import worker_init_fn
from core.views import ViewMaker
from pretrain.config import PretrainConfig
from pretrain.data import EpochSampler, ViewDataset, collate_rendered

TITLE = "GPU"
#: Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, SXM parts); matched longest name
#: first.
PEAK_BF16_TFLOPS = {
    "GH200": 989.0,
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
#: Whole batches per worker in one epoch of the loader sweep (the step benchmark's few images would
#: leave most workers idle: 4 batches of 64 at 224 px gave 16 workers the rate of 4).
LOADER_BATCHES_PER_WORKER = 3
#: Where views are rendered (``views.render``), in the loader sweep's order.
RENDERS = ("loader", "device")
MODES = {
    "fp32": ["train.amp=none", "train.channels_last=false"],
    "bf16_channels_last": ["train.amp=bf16", "train.channels_last=true"],
}


def peak_tflops(name: str | None) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if name and key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def settings(opts: Options) -> dict[str, dict[str, object]]:
    if opts.quick:
        return {
            "embedded": {
                "configs": EMBEDDED,
                "overrides": ["train.batch_size=8", "data.n=16"],
                "steps": 1,
            },
            "resnet50_224": {
                "configs": RESNET50,
                "overrides": [
                    *R50_DATA,
                    "data.image_size=64",
                    "data.n=4",
                    "train.batch_size=4",
                    "model.expander=64-64",
                ],
                "steps": 1,
            },
        }
    return {
        "embedded": {
            "configs": EMBEDDED,
            "overrides": ["data.n=1024", "data.num_workers=0"],
            "steps": 10,
        },
        "resnet50_224": {
            "configs": RESNET50,
            "overrides": [*R50_DATA, "data.n=256", "train.batch_size=64"],
            "steps": 5,
        },
    }


def step_flops(trainer, batch) -> float:
    """FLOPs of one training step (forward and backward; the optimiser's elementwise work is not
    counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_steps(trainer, batch, 1)
    return float(counter.get_total_flops())


def _memory_mb(device: torch.device, fn) -> float | None:
    """Peak memory ``fn`` allocates on a CUDA device above what was allocated before it; None on
    CPU."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure_mode(
    specs: dict[str, tuple[str, list[str]]],
    steps: int,
    repeats: int,
    peak: float | None,
    device: torch.device,
) -> dict[str, dict[str, object]]:
    """Every method of one precision mode: built one after another (memory), then timed
    interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        built, memory = {}, {}
        for name, (config, extra) in specs.items():

            def make(name=name, config=config, extra=extra) -> None:
                built[name] = build(config, extra, Path(tmp) / name)
                run_steps(*built[name], steps)  # warm-up; allocates gradients and optimiser state

            memory[name] = _memory_mb(device, make)
        samples = interleaved(
            {n: (lambda t=t, b=b: run_steps(t, b, steps)) for n, (t, b) in built.items()},
            repeats,
            warmup=0,
            device=device,
        )
        rows = {}
        for name, (trainer, batch) in built.items():
            stats = summary(samples[name], per=steps)
            flops = step_flops(trainer, batch)
            achieved = flops / stats["median_s"]
            rows[name] = {
                "views": trainer.views.num_views,
                "batch_size": trainer.cfg.train.batch_size,
                "step_s": stats["median_s"],
                "img_per_s": trainer.cfg.train.batch_size / stats["median_s"],
                "peak_memory_mb": memory[name],
                "step_gflop": flops / 1e9,
                "achieved_tflops": achieved / 1e12,
                "mfu": achieved / (peak * 1e12) if peak else None,
                **stats,
            }
        for row in rows.values():
            row["step_time_vs_vicreg"] = paired_ratio(row["samples_s"], rows["vicreg"]["samples_s"])
        built.clear()  # frees the models before the cache is emptied
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def loader_grid(quick: bool) -> list[tuple[int, bool, bool]]:
    """(num_workers, pin_memory, persistent_workers) to try; persistence only matters with workers.

    Pinned memory only, apart from the no-worker baseline: on an H200 it changed no rate by more
    than the noise between repeats (first GPU run, 2026-11-30), and it halves the sweep.
    """
    if quick:
        return [(0, False, False), (1, False, False), (1, False, True)]
    # the three largest that fit
    workers = [w for w in (2, 4, 8, 16) if w <= (os.cpu_count() or 1)][-3:]
    pinned = [(w, True, persistent) for w in workers for persistent in (False, True)]
    return [(0, False, False), (0, True, False), *pinned]


def time_loader(
    cfg: PretrainConfig,
    dataset: ViewDataset,
    device: torch.device,
    workers: int,
    pin: bool,
    persistent: bool,
) -> dict[str, object]:
    """Two epochs of ``dataset`` through a loader with these settings, batches copied to ``device``
    (and rendered there when the data set hands raw images)."""
    batch_size = cfg.train.batch_size
    sampler = EpochSampler(len(dataset), batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_rendered,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=persistent,
        worker_init_fn=worker_init_fn,
        drop_last=True,
    )
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        for views, params in loader:
            if dataset.render:
                views.to(device, non_blocking=True)
            else:
                dataset.views.render(views.to(device, non_blocking=True), params)
            params.to(device, non_blocking=True)
        sync(device)
        epochs.append(time.perf_counter() - start)
    images = sampler.batches_per_epoch * batch_size
    return {
        "render": "loader" if dataset.render else "device",
        "num_workers": workers,
        "pin_memory": pin,
        "persistent_workers": persistent,
        "images_per_epoch": images,
        "epoch_s": epochs,
        "img_per_s": images / epochs[1],
        "first_epoch_img_per_s": images / epochs[0],
    }


def loader_sweep(
    config: str, overrides: list[str], device: torch.device, quick: bool, step_img_per_s: float
) -> dict[str, object]:
    """Pretraining's loader for ``config`` under every setting of ``loader_grid``."""
    grid = loader_grid(quick)
    cfg = load_config(PretrainConfig, ROOT / config, overrides)
    if not quick:  # enough batches that every worker renders several: a steady rate, not start-up
        most_workers = max(max(w for w, _, _ in grid), 1)
        images = cfg.train.batch_size * LOADER_BATCHES_PER_WORKER * most_workers
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n=images))
    images = build_dataset(cfg.data, part=cfg.data.part, progress=False)
    maker = ViewMaker(cfg.augment, cfg.views, cfg.data.image_size)
    rows = [
        time_loader(cfg, ViewDataset(images, maker, cfg.seed, render=render), device, *setting)
        for render in (True, False)
        for setting in grid
    ]
    for row in rows:
        row["keeps_up"] = row["img_per_s"] >= step_img_per_s
    # The cheapest setting that keeps up: fewest workers, then pinned and persistent (they cost no
    # worker).
    best = {}
    for render in RENDERS:
        fed = [row for row in rows if row["keeps_up"] and row["render"] == render]
        best[render] = min(
            fed,
            default=None,
            key=lambda r: (r["num_workers"], not r["pin_memory"], not r["persistent_workers"]),
        )
    return {
        "views_per_image": maker.num_views,
        "step_img_per_s": step_img_per_s,
        "settings": rows,
        "fewest_workers_that_keep_up": best,
    }


def measure_setting(
    setting: dict[str, object],
    opts: Options,
    device: torch.device,
    repeats: int,
    peak: float | None,
) -> dict[str, object]:
    specs = {
        mode: variants({**setting, "overrides": [*setting["overrides"], *extra]}, opts, str(device))
        for mode, extra in MODES.items()
    }
    modes = {
        mode: measure_mode(specs[mode], setting["steps"], repeats, peak, device) for mode in MODES
    }
    fed_by = modes["bf16_channels_last"]["vicreg"]["img_per_s"]
    sweep = loader_sweep(*specs["bf16_channels_last"]["vicreg"], device, opts.quick, fed_by)
    return {"steps_per_repeat": setting["steps"], "modes": modes, "loader": sweep}


def measure(opts: Options, device: str = "cuda") -> dict[str, object]:
    """The section's figures on ``device`` (the tests run it on the CPU to check that it works)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_tflops(name)
    repeats = opts.reps(5)
    results = {}
    for setting_name, setting in settings(opts).items():
        try:
            results[setting_name] = measure_setting(setting, opts, device, repeats, peak)
        # a smaller GPU: keep the other setting's figures
        except torch.cuda.OutOfMemoryError as exc:
            results[setting_name] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
            torch.cuda.empty_cache()
    return {
        "device": name or device.type,
        "peak_bf16_tflops": peak,
        "repeats": repeats,
        "settings": results,
    }


def run(opts: Options) -> dict[str, object]:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    return measure(opts, "cuda")


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _modes_table(entry: dict[str, object]) -> list[str]:
    header = [
        "mode",
        "method",
        "step (s)",
        "img/s",
        "step time vs vicreg",
        "peak memory (MiB)",
        "TFLOP/s",
        "MFU",
    ]
    rows = [
        [
            mode,
            method,
            f"{row['step_s']:.4f}",
            f"{row['img_per_s']:.0f}",
            f"{row['step_time_vs_vicreg']:.3f}",
            _opt(row["peak_memory_mb"], ".0f"),
            f"{row['achieved_tflops']:.2f}",
            _opt(row["mfu"], ".1%"),
        ]
        for mode, by_method in entry["modes"].items()
        for method, row in by_method.items()
    ]
    return md.table(header, rows)


def _loader_table(loader: dict[str, object]) -> list[str]:
    lines = [
        f"Data loader ({loader['views_per_image']} views per image; needs "
        f"{loader['step_img_per_s']:.0f} img/s, the bf16 vicreg step):",
        "",
    ]
    header = [
        "views rendered by",
        "workers",
        "pinned",
        "persistent",
        "img/s (2nd epoch)",
        "img/s (1st epoch)",
        "keeps up",
    ]
    rows = [
        [
            row["render"],
            str(row["num_workers"]),
            str(row["pin_memory"]),
            str(row["persistent_workers"]),
            f"{row['img_per_s']:.0f}",
            f"{row['first_epoch_img_per_s']:.0f}",
            "yes" if row["keeps_up"] else "no",
        ]
        for row in loader["settings"]
    ]
    lines += md.table(header, rows)
    for render, best in loader["fewest_workers_that_keep_up"].items():
        lines.append(
            f"\nCheapest setting that keeps up, views rendered by the {render}: "
            + (
                f"num_workers={best['num_workers']}, pin_memory={best['pin_memory']}, "
                f"persistent_workers={best['persistent_workers']}"
                if best
                else "none of those tried"
            )
        )
    return lines


def markdown(result: dict[str, object]) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    lines = [
        f"Device {result['device']} (dense bf16 peak: {_opt(result['peak_bf16_tflops'], '.0f')} "
        f"TFLOP/s); medians of {result['repeats']} repeats; MFU against that peak in both modes."
    ]
    for name, entry in result["settings"].items():
        if "error" in entry:
            lines += ["", f"**{name}**: {entry['error']}"]
            continue
        batch = entry["modes"]["fp32"]["vicreg"]["batch_size"]
        lines += [
            "",
            f"**{name}** (batch {batch})",
            "",
            *_modes_table(entry),
            "",
            *_loader_table(entry["loader"]),
        ]
    return "\n".join(lines)
