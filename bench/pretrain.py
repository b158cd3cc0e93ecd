"""Pretraining step throughput and peak memory of vicreg, mast (pair) and mast (factorized), side by
side, and on the embedded setting the MAST config ``make all`` trains (``mast_default``), the same
with separate target heads (``mast_default_separate``) and the default before 2026-12-07 (separate
heads 128 wide, ``mast_default_h128``).

Two settings: the embedded config (ResNet-18 at base width 16, 64 px, batch 128) and ResNet-50 at
224 px with VICReg's ImageNet recipe (expander 8192-8192-8192, LARS) at a small batch, on
FactorShapes images rendered at 224 px. Each method's Trainer is built from its config; one batch of
its own data loader is kept and the training step (forward, loss, backward, optimiser) is timed on
it. Methods are interleaved within every repeat, so drifts of a shared machine hit all of them
alike; figures are medians over repeats after warm-up, a ratio to vicreg is the median of the
per-repeat ratios against the vicreg timed in the same group. img/s counts source images (a
factorized step renders K + 1 views of each).

Peak memory: on CPU each method runs again in a fresh process (numbers not polluted by the other
methods) that builds its Trainer and takes one step: the resident high-water mark (``peak_mb``) and
the part of it above the resident memory before the step (``step_mb``: gradients, optimiser state,
activations). On CUDA: ``torch.cuda.max_memory_allocated`` and the part above the memory allocated
before the step. This section runs on the CPU (``device=cpu``); the gpu section covers CUDA.

When mast (pair) takes more than 5 % longer than vicreg, one step of each is profiled and the
operators that cost the most are recorded, to show where the difference comes from; so is a step of
the default MAST config when its run misses the end-to-end bar below.

End to end (embedded setting): the default MAST config that ``make all`` trains against VICReg's,
each a real pretraining run of ``train.max_steps`` steps (``Trainer.fit``: the data loader rendering
the views, the steps, logs and the final checkpoint; building the trainer is not timed), runs
interleaved as above; the ratio of wall times is the acceptance figure (<= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.timing import (
    ROOT,
    Options,
    interleaved,
    paired_ratio,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    summary,
    sync,
)
from core import markdown as md
from core.config import load_config
from pretrain.config import PretrainConfig
from pretrain.train import Trainer

TITLE = "Pretraining step (CPU)"
EMBEDDED = {
    "vicreg": "configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml",
    "mast": "configs/pretrain/mast_r18w16_b128_16e_shapes.yaml",
}
RESNET50 = {
    "vicreg": "configs/pretrain/vicreg_r50_b512_100e_imagenet.yaml",
    "mast": "configs/pretrain/mast_r50_b512_100e_imagenet.yaml",
}
#: name -> (key of a setting's ``configs``, overrides); a setting without that key skips the method.
METHODS = {
    "vicreg": ("vicreg", []),
    "mast_pair": ("mast", []),
    "mast_factorized": ("mast", ["views.mode=factorized"]),
    # the MAST config `make all` trains (AND + subspace targets): what the end-to-end bar is about
    "mast_default": ("mast_default", []),
    # the same with separate target heads, and the default before 2026-12-07 (separate heads 128
    # wide): what each change bought (docs/method.md, "Cost of the subspace targets")
    "mast_default_separate": ("mast_default", ["loss.target_grouped=false"]),
    "mast_default_h128": ("mast_default", ["loss.target_grouped=false", "loss.target_hidden=128"]),
}
#: ImageNet configs on FactorShapes rendered at 224 px: the network and recipe of ImageNet, data at
#: hand.
R50_DATA = [
    "data.dataset=factorshapes",
    "data.root=null",
    "data.split=pretrain",
    "data.part=train",
    "data.image_size=224",
    "data.num_workers=0",
]
#: the rows of the MAST config ``make all`` trains (embedded setting only), and what the table
#: says of them
DEFAULT_ROWS = {
    "mast_default": "mast_default: the MAST config `make all` trains (AND subspaces, target heads "
    "grouped)",
    "mast_default_separate": "mast_default_separate: the same with separate target heads",
    "mast_default_h128": "mast_default_h128: the default before 2026-12-07 (separate heads, 128 "
    "wide)",
}
DEFAULTS = tuple(DEFAULT_ROWS)
PAIR_TARGET = 1.05  # the acceptance bar: mast (pair) step time <= 1.05 x vicreg's
#: End to end: the MAST run ``make all`` trains (Makefile's PRETRAIN_CONFIG) against VICReg's.
RUNS = {
    "vicreg": "configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml",
    "mast": "configs/pretrain/mast_and_target_r18w16_b128_16e_shapes.yaml",
}
RUN_TARGET = 1.05  # the acceptance bar: the MAST run's wall time <= 1.05 x VICReg's
#: The embedded setting's configs: the step table's methods and the MAST config ``make all`` trains.
EMBEDDED_CONFIGS = {**EMBEDDED, "mast_default": RUNS["mast"]}


def settings(opts: Options) -> dict[str, dict[str, object]]:
    """Per setting: configs, the overrides that size it, timed steps per repeat, and groups of
    methods timed together with their default repeats. At ResNet-50 the pair comparison gets many
    repeats (its steps are long and a shared machine's noise is +-15 % per step); factorized, 5 x
    slower, gets few."""
    every = ("vicreg", "mast_pair", "mast_factorized")
    if opts.quick:
        return {
            "embedded": {
                "configs": EMBEDDED_CONFIGS,
                "overrides": ["train.batch_size=8", "data.n=16"],
                "steps": 1,
                "groups": [((*every, *DEFAULTS), 2)],
                "runs": {"steps": 2, "repeats": 1},
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
                "groups": [(every, 2)],
            },
        }
    return {
        "embedded": {
            "configs": EMBEDDED_CONFIGS,
            "overrides": [],
            "steps": 3,
            "groups": [((*every, *DEFAULTS), 7)],
            # one epoch of the embedded split (78 steps): its checkpoint and mask snapshot included;
            # 7 repeats: on a shared 2-core machine a pair's ratio moved by +-4 % from repeat to
            # repeat (2026-12-07: the median of 3 gave 1.068, of 7 on the same machine 1.034)
            "runs": {"steps": 78, "repeats": 7},
        },
        "resnet50_224": {
            "configs": RESNET50,
            "overrides": [*R50_DATA, "data.n=16", "train.batch_size=8"],
            "steps": 1,
            "groups": [(("vicreg", "mast_pair"), 9), (("vicreg", "mast_factorized"), 2)],
        },
    }


def variants(
    setting: dict[str, object], opts: Options, device: str = "cpu"
) -> dict[str, tuple[str, list[str]]]:
    """method name -> (config path, overrides), the user's overrides last."""
    root = [f"data.root={opts.data_root}"] if opts.data_root else []
    out = {}
    only = setting.get("methods")  # a setting may time fewer of METHODS (the GPU section's)
    for name, (method, extra) in METHODS.items():
        if method not in setting["configs"] or (only is not None and name not in only):
            continue
        out[name] = (
            setting["configs"][method],
            [f"device={device}", *extra, *setting["overrides"], *root, *opts.overrides],
        )
    return out


def build(
    config: str, overrides: list[str], out: Path
) -> tuple[Trainer, tuple[torch.Tensor, torch.Tensor]]:
    """A Trainer in training mode and one batch of its own loader."""
    cfg = load_config(PretrainConfig, ROOT / config, overrides)
    trainer = Trainer(cfg, out)
    batch = next(iter(trainer.loader))
    trainer.model.train()
    return trainer, batch


def run_steps(trainer: Trainer, batch, steps: int) -> None:
    for _ in range(steps):
        trainer.train_step(*batch)


def measure_steps(
    specs: dict[str, tuple[str, list[str]]], steps: int, repeats: int, warmup: int = 1
) -> dict[str, dict[str, object]]:
    """Median step time and img/s of every method, interleaved; ``warmup`` untimed calls of
    ``steps`` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        built = {
            name: build(config, extra, Path(tmp) / name) for name, (config, extra) in specs.items()
        }
        device = next(iter(built.values()))[0].device
        fns = {name: (lambda t=t, b=b: run_steps(t, b, steps)) for name, (t, b) in built.items()}
        samples = interleaved(fns, repeats, warmup, device)
        rows = {}
        for name, (trainer, _) in built.items():
            stats = summary(samples[name], per=steps)
            batch_size = trainer.cfg.train.batch_size
            rows[name] = {
                "views": trainer.views.num_views,
                "batch_size": batch_size,
                "step_s": stats["median_s"],
                "img_per_s": batch_size / stats["median_s"],
                **stats,
                "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
            }
        return rows


def memory_of(config: str, overrides: list[str], steps: int = 1) -> dict[str, object]:
    """Peak memory over building one method's Trainer and ``steps`` training steps, and the part of
    it the steps add (gradients, optimiser state, activations). Call it in a fresh process on the
    CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer, batch = build(config, overrides, Path(tmp))
        if trainer.cuda:
            sync(trainer.device)
            before = torch.cuda.memory_allocated(trainer.device) / 2**20
            torch.cuda.reset_peak_memory_stats(trainer.device)
            run_steps(trainer, batch, steps)
            peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20
            return {"kind": "cuda_allocated", "peak_mb": peak, "step_mb": peak - before}
        before = rss_mb()
        fresh = reset_peak_rss()  # if it cannot be reset, the peak is the process's whole life's
        run_steps(trainer, batch, steps)
        peak = peak_rss_mb()
        return {
            "kind": "cpu_rss",
            "peak_mb": peak,
            "step_mb": peak - before if fresh and before else None,
        }


def memory_in_subprocess(config: str, overrides: list[str], steps: int = 1) -> dict[str, object]:
    """``memory_of`` in a fresh Python process: its resident peak belongs to one method alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAST_NO_PROGRESS": "1"}
    command = [sys.executable, "-m", "bench.pretrain", "--memory", config, "--steps", str(steps)]
    command += ["--set", *overrides] if overrides else []
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory probe of {config} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_step(trainer: Trainer, batch) -> dict[str, dict[str, float]]:
    """Self time (ms) and calls of every operator over one training step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.cuda else [])
    with profile(activities=activities) as prof:
        run_steps(trainer, batch, 1)
        sync(trainer.device)
    return {
        e.key: {"self_ms": e.self_cpu_time_total / 1000, "calls": e.count}
        for e in prof.key_averages()
    }


def _top(ops: dict[str, dict[str, float]], key, count: int = 8) -> list[dict[str, object]]:
    return [{"op": op, **ops[op]} for op in sorted(ops, key=key, reverse=True)[:count]]


def profile_pair(
    specs: dict[str, tuple[str, list[str]]], other: str = "mast_pair"
) -> dict[str, object]:
    """One profiled step of vicreg and of ``other``: each one's costliest operators, the operators
    ``other`` spends the most extra time in, and each step's total self time (ms)."""
    ops = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vicreg", other):
            trainer, batch = build(*specs[name], Path(tmp) / name)
            run_steps(trainer, batch, 2)  # warm-up
            ops[name] = profile_step(trainer, batch)
    base, mast = ops["vicreg"], ops[other]
    extra = {
        op: {
            "extra_ms": mast[op]["self_ms"] - base.get(op, {"self_ms": 0.0})["self_ms"],
            "calls": mast[op]["calls"],
        }
        for op in mast
    }
    return {
        "vicreg": _top(base, lambda op: base[op]["self_ms"]),
        other: _top(mast, lambda op: mast[op]["self_ms"]),
        f"extra_in_{other}": _top(extra, lambda op: extra[op]["extra_ms"]),
        "total_self_ms": {
            name: sum(row["self_ms"] for row in rows.values()) for name, rows in ops.items()
        },
    }


def time_run(config: str, overrides: list[str], steps: int, out: Path) -> float:
    """Wall seconds of a pretraining run of ``steps`` steps into ``out`` (built first, untimed)."""
    cfg = load_config(PretrainConfig, ROOT / config, [*overrides, f"train.max_steps={steps}"])
    trainer = Trainer(cfg, out)
    start = time.perf_counter()
    trainer.fit()
    sync(trainer.device)
    return time.perf_counter() - start


def measure_runs(overrides: list[str], steps: int, repeats: int) -> dict[str, object]:
    """``RUNS`` end to end, interleaved (the order rotates by repeat): wall seconds per run, and the
    MAST run's ratio to the VICReg run of the same repeat (median over repeats)."""
    samples: dict[str, list[float]] = {name: [] for name in RUNS}
    names = list(RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                out = Path(tmp) / f"{name}_{repeat}"
                samples[name].append(time_run(RUNS[name], overrides, steps, out))
    ratio = paired_ratio(samples["mast"], samples["vicreg"])
    result = {
        "configs": RUNS,
        "steps": steps,
        "repeats": repeats,
        "wall_s": {name: summary(values) for name, values in samples.items()},
        "mast_vs_vicreg": ratio,
        "within_target": ratio <= RUN_TARGET,
    }
    if not result["within_target"]:  # where the default MAST step spends the difference
        result["profile"] = profile_pair(
            {name: (config, overrides) for name, config in RUNS.items()}, "mast"
        )
    return result


def measure_groups(
    specs: dict[str, tuple[str, list[str]]], setting: dict[str, object], opts: Options
) -> dict[str, dict[str, object]]:
    """Every group of methods timed interleaved; each method's ratio to the vicreg of its own
    group."""
    rows: dict[str, dict[str, object]] = {}
    for methods, repeats in setting["groups"]:
        repeats = opts.reps(repeats)
        group = measure_steps({name: specs[name] for name in methods}, setting["steps"], repeats)
        for name, row in group.items():
            row.update(
                repeats=repeats,
                step_time_vs_vicreg=paired_ratio(row["samples_s"], group["vicreg"]["samples_s"]),
            )
            rows.setdefault(name, row)  # vicreg: its first group's figures
    return rows


def run(opts: Options) -> dict[str, object]:
    results: dict[str, object] = {}
    for setting_name, setting in settings(opts).items():
        specs = variants(setting, opts)
        rows = measure_groups(specs, setting, opts)
        for name, (config, extra) in specs.items():
            rows[name]["memory"] = memory_in_subprocess(config, extra)
        for row in rows.values():
            row["peak_memory_vs_vicreg"] = (
                row["memory"]["peak_mb"] / rows["vicreg"]["memory"]["peak_mb"]
            )
        entry = {
            "steps_per_repeat": setting["steps"],
            "overrides": specs["vicreg"][1],
            "methods": rows,
            "mast_pair_within_target": rows["mast_pair"]["step_time_vs_vicreg"] <= PAIR_TARGET,
        }
        if not entry["mast_pair_within_target"]:
            entry["profile"] = profile_pair(specs)
        if "runs" in setting:
            runs = setting["runs"]
            overrides = specs["vicreg"][1]
            entry["runs"] = measure_runs(overrides, runs["steps"], opts.reps(runs["repeats"]))
        results[setting_name] = entry
    return {"settings": results, "pair_target": PAIR_TARGET, "run_target": RUN_TARGET}


METHOD_HEADER = (
    "method",
    "views",
    "repeats",
    "step (s)",
    "img/s",
    "step time vs vicreg",
    "peak memory (MiB)",
    "step memory (MiB)",
    "peak memory vs vicreg",
)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _runs_lines(runs: dict[str, object], target: float) -> list[str]:
    walls = runs["wall_s"]
    cells = [
        [name, runs["configs"][name], f"{walls[name]['median_s']:.1f}"] for name in runs["configs"]
    ]
    verdict = "yes" if runs["within_target"] else "**no** (profile below)"
    return [
        f"End to end: pretraining runs of {runs['steps']} steps (loader, steps, logs, checkpoint), "
        f"median of {runs['repeats']} interleaved repeats:",
        "",
        *md.table(("run", "config", "wall (s)"), cells),
        f"\nMAST run / VICReg run wall time: {runs['mast_vs_vicreg']:.3f} (within {target}: "
        f"{verdict})",
        *(
            _profile_lines(runs["profile"], "mast", "the MAST run's step")
            if "profile" in runs
            else []
        ),
    ]


def _profile_lines(profile: dict[str, object], other: str, label: str) -> list[str]:
    """The profile of ``profile_pair``: each step's costliest operators and where ``other`` spends
    more."""
    lines = [
        f"- {method}, largest self times of one step: "
        + ", ".join(f"{op['op']} {op['self_ms']:.1f} ms" for op in profile[method][:5])
        for method in ("vicreg", other)
    ]
    extra = ", ".join(
        f"{op['op']} +{op['extra_ms']:.1f} ms" for op in profile[f"extra_in_{other}"][:5]
    )
    totals = profile.get("total_self_ms")
    total = (
        f" (one step's self time: {totals[other]:.0f} ms against {totals['vicreg']:.0f} ms)"
        if totals
        else ""
    )
    return [*lines, f"- where {label} spends more than vicreg's{total}: {extra}"]


def markdown(result: dict[str, object]) -> str:
    blocks = []
    for name, entry in result["settings"].items():
        rows = entry["methods"]
        batch = rows["vicreg"]["batch_size"]
        cells = [
            [
                method,
                str(row["views"]),
                str(row["repeats"]),
                f"{row['step_s']:.3f}",
                f"{row['img_per_s']:.1f}",
                f"{row['step_time_vs_vicreg']:.3f}",
                _mb(row["memory"]["peak_mb"]),
                _mb(row["memory"]["step_mb"]),
                f"{row['peak_memory_vs_vicreg']:.2f}",
            ]
            for method, row in rows.items()
        ]
        lines = [
            f"**{name}** (batch {batch}; repeats of {entry['steps_per_repeat']} step(s))",
            "",
            *md.table(METHOD_HEADER, cells),
        ]
        if "mast_default" in rows:
            lines.append("\n" + "; ".join(DEFAULT_ROWS[k] for k in DEFAULT_ROWS if k in rows))
        verdict = "yes" if entry["mast_pair_within_target"] else "**no** (profile below)"
        lines.append(
            f"\nmast (pair) within {result['pair_target']} x vicreg's step time: {verdict}"
        )
        if "profile" in entry:
            lines += _profile_lines(entry["profile"], "mast_pair", "mast (pair)")
        if "runs" in entry:
            lines += ["", *_runs_lines(entry["runs"], result.get("run_target", RUN_TARGET))]
        blocks.append("\n".join(lines))
    memory_kind = next(iter(result["settings"].values()))["methods"]["vicreg"]["memory"]["kind"]
    note = (
        "Peak memory: resident high-water mark of a fresh process that builds the method's trainer "
        "and takes one step; step memory: the part above the resident memory before the step "
        "(gradients, optimiser state, activations)."
        if memory_kind == "cpu_rss"
        else "Peak memory: torch.cuda.max_memory_allocated; step memory: the part above the memory "
        "before the step."
    )
    return "\n\n".join(blocks) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.pretrain --memory CONFIG [--set ...]``: one JSON line with
    ``memory_of``."""
    parser = argparse.ArgumentParser(prog="python -m bench.pretrain")
    parser.add_argument(
        "--memory", required=True, help="config whose training steps' peak memory to measure"
    )
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    args = parser.parse_args(argv)
    print(json.dumps(memory_of(args.memory, args.overrides, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
