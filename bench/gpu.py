"""GPU figures (only with a CUDA device; otherwise the section records that it was skipped).

- Pretraining step of vicreg, mast (pair) and mast (factorized) on the embedded config (with
  mast_default, the MAST config ``make all`` trains) and on ResNet-50 at 224 px (batch 256), in
  fp32 (contiguous tensors) and with bf16 autocast + channels_last: median step time, img/s, ratio
  to vicreg in the same mode (methods interleaved within every repeat), peak memory
  (``torch.cuda.max_memory_allocated`` above what was allocated before the method was built:
  weights, gradients, optimiser state, activations) and model FLOP utilisation: FLOPs of one
  training step (``torch.utils.flop_counter.FlopCounterMode``, forward and backward) per second of
  step time, over the device's dense bf16 peak (a small table by device name; unknown devices give
  null).
- Data loader settings: pretraining's own loader (multi-view ``ViewDataset``, ``EpochSampler``) over
  where views are rendered (``views.render``: the loader's workers, or the device from the raw
  images the loader hands it) x num_workers x pin_memory x persistent_workers, two epochs each,
  batches copied to the device (non-blocking) and, for ``device``, rendered there; img/s of the
  second epoch (persistent workers skip its start-up) against the bf16 vicreg step's img/s: a
  setting keeps the GPU fed when it delivers at least that.
- End to end: real pretraining runs (``Trainer.fit``: loader, views rendered on the device, step,
  logs) in bf16 + channels_last with the fewest workers that keep up, VICReg eager and compiled
  (``train.compile``), MAST eager and, on the embedded config, mast_default eager: img/s over the
  steps after a warm-up (which holds the compile), the share of that time spent waiting for the
  next batch, and MFU from the step's FLOPs. Targets: ResNet-50 at batch 256 MFU >= 35%, the
  embedded config >= 20,000 img/s.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.pretrain import (
    EMBEDDED_CONFIGS,
    R50_DATA,
    RESNET50,
    build,
    run_steps,
    variants,
)
from bench.timing import ROOT, Options, interleaved, paired_ratio, summary, sync
from core import markdown as md
from core.config import load_config
from core.data import build_dataset
from core.seeding import worker_init_fn
from core.views import ViewMaker
from pretrain.config import PretrainConfig
from pretrain.data import EpochSampler, ViewDataset, collate_rendered
from pretrain.train import Trainer

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
#: leave most workers idle: 4 batches of 64 at 224 px gave 16 workers the rate of 4). At batch 256
#: and 16 workers that is 8,192 images, the end-to-end ResNet-50 run's epoch too (one data set).
LOADER_BATCHES_PER_WORKER = 2
#: Where views are rendered (``views.render``), in the loader sweep's order.
RENDERS = ("loader", "device")
#: End-to-end runs: name -> (method of the step table, torch.compile); compiled runs only on CUDA
#: (inductor's CPU compile of a step takes minutes and says nothing about GPUs).
END_TO_END = {
    "vicreg": ("vicreg", False),
    "vicreg_compiled": ("vicreg", True),
    "mast": ("mast_pair", False),
    # the MAST config `make all` trains; only where the setting has it (the embedded one)
    "mast_default": ("mast_default", False),
}
#: The embedded setting's methods: the step table's three and the MAST config `make all` trains
#: (not its separate-heads variants of the CPU table: device time is short).
EMBEDDED_METHODS = ("vicreg", "mast_pair", "mast_factorized", "mast_default")
#: Untimed steps before the end-to-end clock starts: workers start, kernels are picked or compiled.
WARMUP_STEPS = 8
#: The issue's bars: model FLOP utilisation of ResNet-50 pretraining, img/s of the embedded config.
MFU_TARGET = 0.35
EMBEDDED_IMG_PER_S_TARGET = 20_000
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
                "configs": EMBEDDED_CONFIGS,
                "methods": EMBEDDED_METHODS,
                "overrides": ["train.batch_size=8", "data.n=16"],
                "steps": 1,
                "end_to_end_steps": 2,
                "target": ("img_per_s", EMBEDDED_IMG_PER_S_TARGET),
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
                "end_to_end_steps": 2,
                "target": ("mfu", MFU_TARGET),
            },
        }
    return {
        "embedded": {
            "configs": EMBEDDED_CONFIGS,
            "methods": EMBEDDED_METHODS,
            "overrides": ["data.n=1024", "data.num_workers=0"],
            "steps": 10,
            "end_to_end_steps": 120,
            "target": ("img_per_s", EMBEDDED_IMG_PER_S_TARGET),
        },
        "resnet50_224": {
            "configs": RESNET50,
            "overrides": [*R50_DATA, "data.n=512", "train.batch_size=256"],
            "steps": 3,
            "end_to_end_steps": 24,  # + the warm-up: 32 batches of 256, the loader sweep's images
            "target": ("mfu", MFU_TARGET),
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


def _out_of_memory(exc: torch.cuda.OutOfMemoryError) -> dict[str, str]:
    """A run that did not fit, as its figures' place holder: the first line of the error."""
    return {"error": f"out of memory: {(str(exc).splitlines() or [''])[0]}"}


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
        built, memory, failed = {}, {}, {}
        for name, (config, extra) in specs.items():

            def make(name=name, config=config, extra=extra) -> None:
                built[name] = build(config, extra, Path(tmp) / name)
                run_steps(*built[name], steps)  # warm-up; allocates gradients and optimiser state

            try:
                memory[name] = _memory_mb(device, make)
            # e.g. seven views of ResNet-50 at batch 256: the other methods keep their figures
            except torch.cuda.OutOfMemoryError as exc:
                built.pop(name, None)
                failed[name] = _out_of_memory(exc)
            if name in failed and device.type == "cuda":  # the traceback's tensors are gone now
                torch.cuda.empty_cache()
        samples = (
            interleaved(
                {n: (lambda t=t, b=b: run_steps(t, b, steps)) for n, (t, b) in built.items()},
                repeats,
                warmup=0,
                device=device,
            )
            if built
            else {}
        )
        rows: dict[str, dict[str, object]] = {}
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
            row["step_time_vs_vicreg"] = (
                paired_ratio(row["samples_s"], rows["vicreg"]["samples_s"])
                if "vicreg" in rows
                else None
            )
        rows.update(failed)
        built.clear()  # frees the models before the cache is emptied
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def loader_grid(quick: bool) -> list[tuple[int, bool, bool]]:
    """(num_workers, pin_memory, persistent_workers) to try: none, then the two largest worker
    counts that fit, pinned and persistent as pretraining's own loader is on a GPU.

    Pinned memory changed no rate by more than the noise between repeats on an H200 (first GPU
    run, 2026-11-30); at batch 256 of 224 px every setting costs tens of seconds of device time.
    """
    if quick:
        return [(0, False, False), (1, False, False), (1, False, True)]
    workers = [w for w in (4, 8, 16) if w <= (os.cpu_count() or 1)][-2:]
    return [(0, True, False), *[(w, True, True) for w in workers]]


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
        # rendering in the main process alone was the slowest setting by far (~100 img/s at 224
        # px on the H200's host) and would take minutes of device time here
        if quick or setting[0] > 0 or not render
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


def end_to_end(
    config: str,
    overrides: list[str],
    device: torch.device,
    steps: int,
    workers: int,
    step_gflop: float,
    peak: float | None,
) -> dict[str, object]:
    """A pretraining run (``Trainer.fit``) of ``WARMUP_STEPS + steps`` steps, one epoch, views
    rendered on ``device`` by a loader of ``workers`` workers: img/s and MFU over the last
    ``steps`` (each step's end taken after the device finished it)."""
    total = WARMUP_STEPS + steps
    cfg = load_config(
        PretrainConfig,
        ROOT / config,
        [
            *overrides,
            "views.render=device",
            f"data.num_workers={workers}",
            f"train.max_steps={total}",
        ],
    )
    # one epoch: its end (checkpoint, masks) comes after the last timed step
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, n=cfg.train.batch_size * total)
    )
    stamps: list[float] = []
    starts: list[float] = []  # when each step was handed its batch: the time before is the loader's
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        step = trainer.train_step

        def timed(views, params):
            starts.append(time.perf_counter())
            stats = step(views, params)
            sync(device)
            stamps.append(time.perf_counter())
            return stats

        trainer.train_step = timed  # type: ignore[method-assign]
        start = time.perf_counter()  # the first step holds the compile
        try:
            trainer.fit()
        finally:
            # the wrapper refers to the trainer: a cycle that would keep the model, its optimiser
            # state and the loader's workers alive into the next run (end_to_end_runs collects)
            del trainer.train_step
    step_s = (stamps[-1] - stamps[WARMUP_STEPS - 1]) / (len(stamps) - WARMUP_STEPS)
    # between a step's end and the next one's batch: the loader (and the trainer's logging)
    waited = sum(starts[i] - stamps[i - 1] for i in range(WARMUP_STEPS, len(stamps)))
    achieved = step_gflop * 1e9 / step_s
    return {
        "compile": cfg.train.compile,
        "num_workers": workers,
        "batch_size": cfg.train.batch_size,
        "steps": len(stamps) - WARMUP_STEPS,
        "warmup_s": stamps[WARMUP_STEPS - 1] - start,
        "step_s": step_s,
        "img_per_s": cfg.train.batch_size / step_s,
        "waiting_share": waited / (stamps[-1] - stamps[WARMUP_STEPS - 1]),
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * 1e12) if peak else None,
    }


def end_to_end_runs(
    setting: dict[str, object],
    specs: dict[str, dict[str, tuple[str, list[str]]]],
    modes: dict[str, dict[str, dict[str, object]]],
    workers: int,
    device: torch.device,
    peak: float | None,
    report: Callable[[dict[str, object]], None] = lambda e2e: None,
) -> dict[str, object]:
    """``END_TO_END`` in bf16 + channels_last, each against the setting's target; ``report`` gets
    the runs so far after each one."""
    metric, bar = setting["target"]
    runs: dict[str, dict[str, object]] = {}
    e2e = {"target": {"metric": metric, "value": bar}, "runs": runs}
    for name, (key, compiled) in END_TO_END.items():
        if (compiled and device.type != "cuda") or key not in specs["bf16_channels_last"]:
            continue
        runs[name] = _end_to_end_row(setting, specs, modes, key, compiled, workers, device, peak)
        report(e2e)
    return e2e


def _end_to_end_row(
    setting: dict[str, object],
    specs: dict[str, dict[str, tuple[str, list[str]]]],
    modes: dict[str, dict[str, dict[str, object]]],
    key: str,
    compiled: bool,
    workers: int,
    device: torch.device,
    peak: float | None,
) -> dict[str, object]:
    """One run of ``END_TO_END`` (method ``key``): its figures against the target, or an error."""
    bf16, (metric, bar) = modes["bf16_channels_last"], setting["target"]
    if "error" in bf16[key]:
        return {"error": f"skipped: its bf16 step failed ({bf16[key]['error']})"}
    config, overrides = specs["bf16_channels_last"][key]
    try:
        row = end_to_end(
            config,
            [*overrides, f"train.compile={str(compiled).lower()}"],
            device,
            setting["end_to_end_steps"],
            workers,
            bf16[key]["step_gflop"],
            peak,
        )
    # a failed run (out of memory, an inductor or cuDNN error) keeps the others' figures
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).splitlines() or [""])[0][:200]
        return {"error": f"{type(exc).__name__}: {first}"}
    finally:  # this run's trainer and workers, and a compiled graph, gone before the next
        gc.collect()
        if compiled:
            torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    value = row[metric]
    row["meets_target"] = None if value is None else value >= bar
    return row


def measure_setting(
    setting: dict[str, object],
    opts: Options,
    device: torch.device,
    repeats: int,
    peak: float | None,
    entry: dict[str, object] | None = None,
    report: Callable[[], None] = lambda: None,
) -> dict[str, object]:
    """One setting's figures, filled into ``entry`` (a new dict by default); ``report`` is called
    after every part, so that a run cut off keeps the parts before."""
    specs = {
        mode: variants({**setting, "overrides": [*setting["overrides"], *extra]}, opts, str(device))
        for mode, extra in MODES.items()
    }
    entry = {} if entry is None else entry
    modes: dict[str, dict[str, dict[str, object]]] = {}
    entry.update(steps_per_repeat=setting["steps"], modes=modes)
    for mode in MODES:
        modes[mode] = measure_mode(specs[mode], setting["steps"], repeats, peak, device)
        report()
    vicreg = modes["bf16_channels_last"]["vicreg"]
    if "error" in vicreg:  # the loader is measured against this step's rate
        entry["error"] = (
            f"bf16 vicreg step failed ({vicreg['error']}): no loader or end-to-end figures"
        )
        return entry
    entry["loader"] = sweep = loader_sweep(
        *specs["bf16_channels_last"]["vicreg"], device, opts.quick, vicreg["img_per_s"]
    )
    report()
    # Workers for the end-to-end runs: the fewest (at least one, so that loading overlaps the
    # step, which waits on the device every step) that kept up with views rendered on the device,
    # else the most tried.
    tried = sorted({w for w, _, _ in loader_grid(opts.quick)})
    fed = [
        row["num_workers"]
        for row in sweep["settings"]
        if row["render"] == "device" and row["keeps_up"] and row["num_workers"] > 0
    ]
    workers = min(fed) if fed else tried[-1]

    def runs_so_far(e2e: dict[str, object]) -> None:
        entry["end_to_end"] = e2e
        report()

    entry["end_to_end"] = end_to_end_runs(setting, specs, modes, workers, device, peak, runs_so_far)
    return entry


def measure(opts: Options, device: str = "cuda") -> dict[str, object]:
    """The section's figures on ``device`` (the tests run it on the CPU to check that it works),
    handed to ``opts.save`` after every part."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_tflops(name)
    repeats = opts.reps(5)
    results: dict[str, dict[str, object]] = {}
    record = {
        "device": name or device.type,
        "peak_bf16_tflops": peak,
        "repeats": repeats,
        "settings": results,
    }
    for setting_name, setting in settings(opts).items():
        results[setting_name] = {}
        try:
            measure_setting(
                setting,
                opts,
                device,
                repeats,
                peak,
                results[setting_name],
                lambda: opts.save(record),
            )
        # a smaller GPU: keep the other setting's figures
        except torch.cuda.OutOfMemoryError as exc:
            results[setting_name] = _out_of_memory(exc)
            torch.cuda.empty_cache()
        opts.save(record)
    return record


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
        [mode, method, row["error"], "", "", "", "", ""]
        if "error" in row
        else [
            mode,
            method,
            f"{row['step_s']:.4f}",
            f"{row['img_per_s']:.0f}",
            _opt(row["step_time_vs_vicreg"], ".3f"),
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


def _end_to_end_table(e2e: dict[str, object]) -> list[str]:
    metric, bar = e2e["target"]["metric"], e2e["target"]["value"]
    target = f"MFU >= {bar:.0%}" if metric == "mfu" else f"at least {bar:,} img/s"
    lines = [
        "End to end: pretraining runs, views rendered on the device, bf16 + channels_last, after "
        f"{WARMUP_STEPS} warm-up steps (they hold the compile); target {target}. Waiting for "
        "data: the share of the timed steps' wall time between a step's end and the next batch "
        "(the loader, and the trainer's logging); near 0 when the loader keeps up:",
        "",
    ]
    header = [
        "run",
        "torch.compile",
        "workers",
        "timed steps",
        "step (s)",
        "img/s",
        "waiting for data",
        "MFU",
        "target",
    ]
    rows = []
    for name, row in e2e["runs"].items():
        if "error" in row:
            rows.append([name, "", "", "", "", row["error"], "", "", ""])
            continue
        met = row["meets_target"]
        rows.append(
            [
                name,
                "yes" if row["compile"] else "no",
                str(row["num_workers"]),
                str(row["steps"]),
                f"{row['step_s']:.4f}",
                f"{row['img_per_s']:.0f}",
                _opt(row.get("waiting_share"), ".0%"),
                _opt(row["mfu"], ".1%"),
                "n/a" if met is None else ("met" if met else "not met"),
            ]
        )
    lines += md.table(header, rows)
    eager, compiled = (e2e["runs"].get(k, {}) for k in ("vicreg", "vicreg_compiled"))
    if "img_per_s" in eager and "img_per_s" in compiled:
        lines.append(
            f"\ntorch.compile gave {compiled['img_per_s'] / eager['img_per_s']:.2f} x eager's "
            f"img/s (its warm-up, the compile included: {compiled['warmup_s']:.0f} s against "
            f"{eager['warmup_s']:.0f} s)."
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
        if "modes" not in entry:  # the setting failed as a whole, or was not reached
            lines += ["", f"**{name}**: {entry.get('error', 'not measured (cut off before it)')}"]
            continue
        batches = [
            row["batch_size"]
            for rows in entry["modes"].values()
            for row in rows.values()
            if "batch_size" in row
        ]
        batch = batches[0] if batches else "n/a"
        lines += ["", f"**{name}** (batch {batch})", "", *_modes_table(entry)]
        if "error" in entry:
            lines += ["", entry["error"]]
            continue
        # a run cut off (``Options.checkpoint``) has the parts before the cut alone
        if "loader" in entry:
            lines += ["", *_loader_table(entry["loader"])]
        if "end_to_end" in entry:
            lines += ["", *_end_to_end_table(entry["end_to_end"])]
    return "\n".join(lines)
