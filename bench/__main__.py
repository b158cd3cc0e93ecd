"""Benchmarks (`make bench`): results/bench/<section>.json and results/bench/README.md, which joins
them.

  python -m bench [--only SECTION ...] [--quick] [--repeats N] [--set key=value ...] [--out DIR]

Sections: pretrain (step throughput and peak memory, embedded and ResNet-50 at 224 px), loss_scaling
(MAST loss cost against d and K), data (views/s per worker: ours, torchvision v2, PIL), downstream
(feature extraction, linear probes, a detection iteration), gpu (bf16 + channels_last, MFU, data
loader settings; skipped without CUDA), stages (`make all`'s time per stage, from its log),
memory_format (the embedded step in channels_last vs contiguous, on this CPU's oneDNN kernels and on
its AVX2 ones). Figures are medians over repeats after warm-up, with the machine described.
README.md is rebuilt from every section file in the folder, so `--only` refreshes some sections and
keeps the others. A long section (gpu) writes its figures so far to <section>.json.partial as it
goes, so a run that is cut off keeps them; README.md shows them (`--readme-only` rebuilds it
without measuring). Benchmarks are not tests: they assert nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from bench import data, downstream, gpu, loss_scaling, memory_format, pretrain, stages
from bench.machine import describe_machine
from bench.timing import Options, timestamp
from core.cli import add_set_arg
from core.io import atomic_write_text
from core.logs import setup_logging

SECTIONS = {
    module.__name__.rsplit(".", 1)[1]: module
    for module in (pretrain, loss_scaling, data, downstream, gpu, stages, memory_format)
}
log = logging.getLogger("bench")
#: Suffix of the file a section's figures so far go to while it runs (``Options.checkpoint``).
PARTIAL = ".json.partial"


def run_section(name: str, opts: Options, out: Path) -> dict[str, object]:
    """Run one section and write ``out/<name>.json`` (results, machine, time, options)."""
    log.info("%s ...", name)
    machine = describe_machine()  # before the section, so that busy_cores is other processes' work
    busy = machine.get("busy_cores")
    if busy is not None and busy > 0.2 * (machine["cores"] or 1):
        log.warning(
            "other processes keep %.1f of %s cores busy: figures will be slow and noisy",
            busy,
            machine["cores"],
        )
    start = time.perf_counter()
    partial = out / f"{name}{PARTIAL}"

    def record_of(result: dict[str, object]) -> dict[str, object]:
        return {
            "benchmark": name,
            "time": timestamp(),
            "machine": machine,
            "quick": opts.quick,
            "section_s": time.perf_counter() - start,
            **result,
        }

    def checkpoint(result: dict[str, object]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(partial, json.dumps(record_of(result) | {"partial": True}, indent=2))

    try:
        result = SECTIONS[name].run(dataclasses.replace(opts, checkpoint=checkpoint))
    except Exception as exc:  # noqa: BLE001 - one failing section must not cost the others' figures
        log.exception("%s failed", name)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    record = record_of(result)
    kept = _measured_record(out / f"{name}.json")
    # e.g. the GPU section on a CPU machine: keep the GPU's figures
    if "skipped" in result and kept is not None:
        log.info(
            "%s skipped (%s): kept the figures measured %s",
            name,
            result["skipped"],
            kept.get("time", "?"),
        )
        return kept
    atomic_write_text(out / f"{name}.json", json.dumps(record, indent=2) + "\n")
    if "error" not in record:  # after an error the partial figures are what it measured
        partial.unlink(missing_ok=True)
    log.info("%s done in %.0f s", name, record["section_s"])
    return record


def _measured_record(path: Path) -> dict[str, object] | None:
    """The section file at ``path`` if it holds figures (not a skip, an error or a quick run), else
    None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    measured = not ({"skipped", "error"} & record.keys()) and not record.get("quick")
    return record if measured else None


def machine_line(machine: dict[str, object]) -> str:
    memory = f", {machine['memory_gib']} GiB RAM" if machine.get("memory_gib") else ""
    text = (
        f"{machine['cpu']}, {machine['cores']} cores{memory}, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), GPU: {machine['cuda'] or 'none'}"
    )
    busy = machine.get("busy_cores")
    return text + (
        f"; other processes busy on {busy:.1f} cores before it" if busy is not None else ""
    )


def section_block(name: str, record: dict[str, object]) -> str:
    module = SECTIONS[name]
    try:
        body = f"failed: {record['error']}" if "error" in record else module.markdown(record)
    except (KeyError, TypeError, IndexError):  # a file from an older version of the benchmark
        body = f"(`{name}.json` has an older layout: rerun `python -m bench --only {name}`)"
    quick = " **Quick mode: tiny sizes, not a measurement.**" if record.get("quick") else ""
    title = module.TITLE
    if record.get("partial"):
        title += " (cut off)"
        quick += (
            f" **Cut off or failed after this time: the figures measured before it, from "
            f"`{name}{PARTIAL}`.**"
        )
    took = f" in {record['section_s']:.0f} s" if "section_s" in record else ""
    return (
        f"## {title}\n\n_Measured {record.get('time', '?')}{took} on "
        f"{machine_line(record['machine'])}._{quick}\n\n{body}"
    )


def _partial_is_news(partial: Path, full: Path) -> bool:
    """Whether the figures a cut-off run left in ``partial`` belong in the README: no section
    file, one that holds an error, or one older than them (a run killed after an earlier one had
    finished)."""
    if not partial.is_file():
        return False
    if not full.is_file():
        return True
    record = json.loads(full.read_text())
    return "error" in record or partial.stat().st_mtime > full.stat().st_mtime


def write_readme(out: Path) -> str:
    """README.md from every section file present in ``out``, in section order, with the figures of
    a run that was cut off after the section's last whole figures."""
    blocks = []
    for name in SECTIONS:
        path = out / f"{name}.json"
        if path.is_file():
            blocks.append(section_block(name, json.loads(path.read_text())))
        partial = out / f"{name}{PARTIAL}"
        if _partial_is_news(partial, path):
            blocks.append(section_block(name, json.loads(partial.read_text())))
    text = (
        "# Benchmarks\n\nGenerated by `make bench` (`python -m bench`); each section's numbers are "
        "in `<section>.json` beside this file. Figures are medians over repeated runs after "
        "warm-up; methods compared with each other are interleaved within every repeat. Benchmarks "
        "assert nothing.\n\n" + "\n\n".join(blocks) + "\n"
    )
    atomic_write_text(out / "README.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        default=None,
        metavar="SECTION",
        help=f"run these sections only ({', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 repeats: a smoke test, not a measurement",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats of every figure (default: per section)"
    )
    add_set_arg(
        parser, "overrides for every pretraining config benchmarked, e.g. model.expander=512-512"
    )
    parser.add_argument(
        "--data-root", default=None, help="FactorShapes cache folder (default: the data cache)"
    )
    parser.add_argument(
        "--make-log",
        type=Path,
        default=Path("results/runs/make_all.jsonl"),
        help="make all's stage log (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--readme-only",
        action="store_true",
        help="measure nothing: rebuild README.md from the section files in --out (e.g. after a "
        "run was cut off: its figures so far are in <section>.json.partial)",
    )
    args = parser.parse_args(argv)
    if args.readme_only:
        if not args.out.is_dir():
            parser.error(f"--out {args.out} is not a folder: nothing to rebuild README.md from")
        print(write_readme(args.out))
        return 0
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    opts = Options(
        quick=args.quick,
        repeats=args.repeats,
        overrides=args.overrides,
        data_root=args.data_root,
        make_log=args.make_log,
    )
    records = [run_section(name, opts, args.out) for name in args.only or SECTIONS]
    print(write_readme(args.out))
    failed = [record["benchmark"] for record in records if "error" in record]
    if failed:
        print(f"bench: section(s) failed: {', '.join(failed)} (see the log above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
