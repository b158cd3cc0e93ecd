"""CPU memory formats: the embedded MAST training step in channels_last and in contiguous tensors,
on the oneDNN kernels this CPU gets and on its AVX2 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``, what
AVX2-only CPUs run), each in a child process (the cap applies at start-up). Both formats are forced
here, whatever ``core.memory_format`` would choose; the choice it makes is reported beside them. The
figures are what docs/reliability.md cites for turning channels_last off on AVX2-class kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.pretrain import EMBEDDED, build, run_steps
from bench.timing import ROOT, Options, interleaved, paired_ratio, summary
from core import markdown as md
from core.memory_format import Choice, choose

TITLE = "CPU memory format (channels_last vs contiguous)"
KERNELS = {"native": None, "avx2": "AVX2"}


def measure(overrides: list[str], steps: int, repeats: int) -> dict[str, object]:
    """Median step time of the embedded MAST config in both formats, interleaved (this process's
    kernels)."""
    built = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, channels_last in (("channels_last", True), ("contiguous", False)):
            trainer, batch = build(EMBEDDED["mast"], ["device=cpu", *overrides], Path(tmp) / name)
            trainer.memory = Choice(channels_last, "forced by the benchmark")
            trainer.model.to(memory_format=trainer.memory.memory_format)
            built[name] = (trainer, batch)
        samples = interleaved(
            {n: (lambda t=t, b=b: run_steps(t, b, steps)) for n, (t, b) in built.items()},
            repeats,
            warmup=1,
        )
        trainer = built["contiguous"][0]
        chosen = choose(torch.device("cpu"), trainer.cfg.model.arch, trainer.cfg.model.base_width)
    rows = {name: summary(values, per=steps) for name, values in samples.items()}
    return {
        "step_s": {name: row["median_s"] for name, row in rows.items()},
        "samples_s": samples,
        "channels_last_vs_contiguous": paired_ratio(
            samples["channels_last"], samples["contiguous"]
        ),
        "chosen": chosen.as_dict(),
        "threads": torch.get_num_threads(),
    }


def run(opts: Options) -> dict[str, object]:
    overrides = ["train.batch_size=8", "data.n=16"] if opts.quick else []
    overrides += [f"data.root={opts.data_root}"] if opts.data_root else []
    steps, repeats = (1, opts.reps(2)) if opts.quick else (3, opts.reps(7))
    results = {}
    for name, cap in KERNELS.items():
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MAST_NO_PROGRESS": "1"}
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if cap:
            env["ONEDNN_MAX_CPU_ISA"] = cap
        command = [
            sys.executable,
            "-m",
            "bench.memory_format",
            "--steps",
            str(steps),
            "--repeats",
            str(repeats),
            "--set",
            *overrides,
            *opts.overrides,
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{name} kernels: the child failed:\n{done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "config": EMBEDDED["mast"],
        "steps_per_repeat": steps,
        "repeats": repeats,
        "overrides": overrides,
        "kernels": results,
    }


def markdown(result: dict[str, object]) -> str:
    header = [
        "oneDNN kernels",
        "threads",
        "channels_last (s)",
        "contiguous (s)",
        "channels_last / contiguous",
        "core.memory_format chooses",
    ]
    rows = [
        [
            name,
            str(row["threads"]),
            f"{row['step_s']['channels_last']:.3f}",
            f"{row['step_s']['contiguous']:.3f}",
            f"{row['channels_last_vs_contiguous']:.2f}",
            str(row["chosen"]["memory_format"]),
        ]
        for name, row in result["kernels"].items()
    ]
    lines = [
        (
            f"`{result['config']}` training step ({result['repeats']} repeats of "
            f"{result['steps_per_repeat']} step(s), both formats interleaved):"
        ),
        "",
        *md.table(header, rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The child: one JSON line with ``measure`` on this process's kernels."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_format")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.overrides, args.steps, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
