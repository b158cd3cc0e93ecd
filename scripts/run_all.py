"""`make all`: every stage on the embedded FactorShapes data, as jobs that run side by side.

  python -m scripts.run_all [--results DIR] [--jobs N] [--force] [--dry-run]

The pipeline is a graph of stage commands (``python -m pretrain``, ``python -m downstream.*``,
``python -m analysis``): the floors and the ceiling need only the data, each checkpoint's
evaluations only its own pretraining. Up to ``--jobs`` of them run at once (default 2), longest
chain first. On 2 cores two jobs fill the machine: a detection run is mostly one thread
(RoIAlign's CPU backward, mmdet's Python) and a pretraining run waits on its single-process
loader. Every job keeps its own thread count, so its numbers are those of the command run alone.
With more than one job at a time, the jobs run with ``OMP_WAIT_POLICY=PASSIVE`` (unless it is
set): OpenMP threads that spin while they wait took the cores from the other job (two 60-step
pretraining runs side by side: 150 s spinning, 44 s passive; two 60-iteration detection runs:
193 s and 98 s; the same weights bitwise).

Each job's output goes to ``<results>/runs/make_all/<job>.log``; the console gets a line per start
and end, and every minute the last line of each running job. Wall times go to
``<results>/runs/make_all.jsonl`` (one line per job with its start offset, then the total).
A failed job stops the others (they resume or skip their finished work when `make all` runs
again) and its log's tail is printed. Re-running skips what is done unless ``--force``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAST = (
    "mast_and_target_r18w16_b128_16e_shapes"  # the study's best MAST configuration (docs/method.md)
)
VICREG = "vicreg_r18w16_b128_16e_shapes"
#: The FactorShapes splits the evaluations read (the "data" job); pretraining reads "pretrain".
EVALUATION_SPLITS = ("cls-upright", "cls-rot", "det", "det-upright")
HEARTBEAT_S = 60.0
TAIL_LINES = 30


@dataclasses.dataclass
class Job:
    name: str
    title: str
    argv: list[str]
    after: tuple[str, ...] = ()
    #: seconds it took on the 2-core reference machine alone: orders the ready jobs (longest
    #: remaining chain first)
    cost: float = 60.0


def jobs(results: Path, force: bool, python: str = sys.executable) -> list[Job]:
    """The pipeline's jobs, in the order a single worker would run them."""
    runs, records = results / "runs", results / "records"
    py = [python, "-m"]
    again = ["--force"] if force else []
    ckpt = {m: str(runs / f"{m}_s0" / "last.pt") for m in (MAST, VICREG)}

    def cls(name: str) -> list[str]:
        # a folder per job: a classification run locks its --out, and these jobs may run together
        return [
            *py,
            "downstream.classification",
            "--config",
            "configs/classification/linear_knn_shapes.yaml",
            "--records",
            str(records / "classification.jsonl"),
            "--out",
            str(runs / "classification" / name),
            "--set",
            f"cache={runs / 'cache' / 'features'}",
        ]

    def detection(protocol: str, kind: str, source: list[str]) -> list[str]:
        return [
            *py,
            "downstream.detection",
            "--protocol",
            protocol,
            *source,
            *again,
            "--out",
            str(runs / "detection"),
            "--records",
            str(records / f"{kind}.jsonl"),
        ]

    floor = ["--floor", "--arch", "resnet18w16"]
    out = [
        Job(
            "check",
            "stack check (torch, torchvision, mmcv ops)",
            [*py, "core.env", "--check"],
            cost=7,
        ),
        # the pretraining split first, on its own: pretraining (the longest chain) starts on it
        # while the other splits are generated beside it
        Job(
            "data_pretrain",
            "FactorShapes data (pretrain split)",
            [*py, "core.data", "prepare", "--out", str(runs / "data_pretrain"), *again]
            + ["--set", "splits=[pretrain]"],
            ("check",),
            cost=10,
        ),
        Job(
            "data",
            "FactorShapes data (classification and detection splits)",
            [*py, "core.data", "prepare", "--out", str(runs / "data"), *again]
            + ["--set", f"splits=[{','.join(EVALUATION_SPLITS)}]"],
            ("check",),
            cost=30,
        ),
    ]
    for method, cost in ((MAST, 400), (VICREG, 346)):
        short = method.split("_r18")[0]
        out.append(
            Job(
                f"pretrain_{short}",
                f"pretrain {short} (embedded default; resumes or skips a finished run)",
                [
                    *py,
                    "pretrain",
                    "--config",
                    f"configs/pretrain/{method}.yaml",
                    "--out",
                    str(runs / f"{method}_s0"),
                    "--force" if force else "--auto-resume",  # --force moves the old run to stale/
                ],
                ("data_pretrain",),
                cost=cost,
            )
        )
        out.append(
            Job(
                f"classification_{short}",
                f"classification of {short} (9 FactorShapes tasks, linear-lbfgs + knn)",
                [*cls(short), "--ckpt", ckpt[method]],
                (f"pretrain_{short}", "data"),
                cost=50,
            )
        )
    out += [
        Job(
            "classification_references",
            "classification floor and ceiling (random init; supervised, a network per image part)",
            [*cls("references"), *floor, "--ceiling", "--ceiling-dir", str(runs / "ceiling")],
            ("data",),
            cost=550,
        ),
        Job(
            "detection_mast",
            "detection of MAST (embedded-frcnn; skips recorded runs)",
            detection("embedded-frcnn", "detection", ["--ckpt", ckpt[MAST]]),
            ("pretrain_mast_and_target", "data"),
            cost=180,
        ),
        Job(
            "segmentation_mast",
            "instance segmentation of MAST (embedded-mrcnn; skips recorded runs)",
            detection("embedded-mrcnn", "segmentation", ["--ckpt", ckpt[MAST]]),
            ("pretrain_mast_and_target", "data"),
            cost=250,
        ),
        Job(
            "detection_floor",
            "detection floor (embedded-frcnn, random init; skips recorded runs)",
            detection("embedded-frcnn", "detection", floor),
            ("data",),
            cost=180,
        ),
        Job(
            "segmentation_floor",
            "instance segmentation floor (embedded-mrcnn, random init; skips recorded runs)",
            detection("embedded-mrcnn", "segmentation", floor),
            ("data",),
            cost=250,
        ),
    ]
    out.append(
        Job(
            "analysis",
            "analysis and report (tables, masks, uncertainty, invariance, curves)",
            [*py, "analysis", "all", "--runs", str(runs), "--results", str(results)],
            tuple(job.name for job in out),
            cost=33,
        )
    )
    return out


def chain_costs(graph: list[Job]) -> dict[str, float]:
    """Each job's cost plus that of the longest chain of jobs waiting on it."""
    after: dict[str, list[str]] = {job.name: [] for job in graph}
    for job in graph:
        for dep in job.after:
            after[dep].append(job.name)
    cost = {job.name: job.cost for job in graph}
    memo: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in memo:
            memo[name] = cost[name] + max((chain(n) for n in after[name]), default=0.0)
        return memo[name]

    return {job.name: chain(job.name) for job in graph}


def check_graph(graph: list[Job]) -> None:
    names = [job.name for job in graph]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate job names in {names}")
    seen: set[str] = set()
    for job in graph:  # listed after what they wait on: no cycles
        missing = [dep for dep in job.after if dep not in seen]
        if missing:
            raise ValueError(f"job {job.name} waits on {missing}, not listed before it")
        seen.add(job.name)


def job_env(max_jobs: int) -> dict[str, str]:
    """The jobs' environment: idle OpenMP threads sleep when jobs share the cores (docstring)."""
    env = dict(os.environ)
    if max_jobs > 1:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _last_line(path: Path, width: int = 110) -> str:
    """The log's last non-empty piece (tqdm rewrites its line with carriage returns)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    pieces = [p.strip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
    return pieces[-1][:width] if pieces else ""


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _stop(procs) -> None:
    """SIGTERM to each job's process group (the stages save or resume what they did)."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # ended since it was last polled
            pass


def _stamp(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run(graph: list[Job], results: Path, max_jobs: int, log=print) -> int:
    """Run ``graph`` with up to ``max_jobs`` jobs at once; 0 when every job succeeded."""
    check_graph(graph)
    logs = results / "runs" / "make_all"
    logs.mkdir(parents=True, exist_ok=True)
    timings = results / "runs" / "make_all.jsonl"
    priority = chain_costs(graph)
    by_name = {job.name: job for job in graph}
    pending = dict(by_name)
    done: set[str] = set()
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    start = time.monotonic()
    beat = start
    failed: str | None = None

    def record(entry: dict) -> None:
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(timings, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    try:
        while pending or running:
            ready = [j for j in pending.values() if set(j.after) <= done]
            ready.sort(key=lambda j: -priority[j.name])
            while failed is None and ready and len(running) < max_jobs:
                job = ready.pop(0)
                del pending[job.name]
                path = logs / f"{job.name}.log"
                handle = open(path, "w")
                proc = subprocess.Popen(
                    job.argv,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=job_env(max_jobs),
                )
                handle.close()
                running[job.name] = (proc, time.monotonic(), path)
                stamp = _stamp(time.monotonic() - start)
                log(f"[make all] {stamp} start: {job.title}  (log: {path})")
            if not running:
                break
            time.sleep(0.5)
            for name, (proc, t0, path) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                now = time.monotonic()
                job = by_name[name]
                if code != 0:
                    if failed is None:
                        failed = name
                        log(f"[make all] {job.title} failed (exit {code}); the end of {path}:")
                        log(_tail(path))
                    continue
                done.add(name)
                record(
                    {
                        "stage": job.title,
                        "job": name,
                        "seconds": round(now - t0, 1),
                        "started_s": round(t0 - start, 1),
                    }
                )
                log(f"[make all] {_stamp(now - start)} done in {now - t0:.0f} s: {job.title}")
            if failed is not None:
                _stop(proc for proc, _, _ in running.values())
                pending.clear()
            if time.monotonic() - beat >= HEARTBEAT_S and running:
                beat = time.monotonic()
                for name, (_, _, path) in running.items():
                    log(f"[make all] {_stamp(beat - start)} {name}: {_last_line(path)}")
    except KeyboardInterrupt:
        _stop(proc for proc, _, _ in running.values())
        raise
    if failed is not None:
        log(f"[make all] stopped: {failed} failed; fix it and rerun `make all` (done work is kept)")
        return 1
    total = time.monotonic() - start
    record({"stage": "total", "kind": "total", "seconds": round(total, 1), "jobs": max_jobs})
    log(f"\n[make all] finished in {total:.0f} s ({total / 60:.1f} min, {max_jobs} jobs at a time)")
    return 0


def outputs(results: Path) -> str:
    r = results
    return "\n".join(
        [
            "Outputs:",
            f"  data summary     {r}/runs/data/summary.json",
            f"  checkpoints      {r}/runs/{{{MAST},{VICREG}}}_s0/last.pt (logs: log.jsonl)",
            f"  stage timings    {r}/runs/make_all.jsonl (job logs: {r}/runs/make_all/)",
            f"  classification   {r}/records/classification.jsonl (features: {r}/runs/cache)",
            f"  detection        {r}/records/{{detection,segmentation}}.jsonl",
            f"                   (mmdet logs: {r}/runs/detection)",
            f"  tables, figures  {r}/tables/, {r}/figures/",
            f"  report           {r}/README.md",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run_all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="default: %(default)s"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="jobs at once (default: %(default)s; each job keeps torch's own thread count)",
    )
    parser.add_argument("--force", action="store_true", help="redo finished work")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and stop")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    graph = jobs(args.results, args.force)
    if args.dry_run:
        check_graph(graph)
        priority = chain_costs(graph)
        for job in graph:
            wait = f" after {', '.join(job.after)}" if job.after else ""
            print(f"{job.name} (chain {priority[job.name]:.0f} s){wait}\n  $ {' '.join(job.argv)}")
        return 0
    code = run(graph, args.results, args.jobs)
    if code == 0:
        print(outputs(args.results))
    return code


if __name__ == "__main__":
    sys.exit(main())
