"""The README's timing table, from what the suite measured itself: `make all`'s wall time per stage
(``results/bench/stages.json``, which `make bench` reads from `make all`'s log), the study's step
ledger (``results/study/times.jsonl``, one line per step it ran, with the run's resolved config in
``results/study/runs.json``) and the benchmark sections' own times (``results/bench/*.json``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from core import markdown

#: Shorter pretraining, detection and segmentation entries are resumes or steps that found their
#: work done, not whole runs.
WHOLE_RUN_S = 60.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def make_all_rows(results: Path) -> list[list[str]]:
    """One row per stage of the last `make all` the bench read, then the total."""
    bench = _read_json(results / "bench" / "stages.json")
    if not bench or not bench.get("stages"):
        return []
    day = str(bench.get("time", ""))[:10]
    rows = [
        [f"`make all`: {s['stage']}", _minutes(float(s["seconds"])), ""] for s in bench["stages"]
    ]
    total = float(bench.get("total_s") or sum(float(s["seconds"]) for s in bench["stages"]))
    source = f"`results/bench/stages.json` ({day})"
    return [["**`make all` after set-up**", f"**{_minutes(total)}**", source], *rows]


def _ledger(results: Path) -> list[dict]:
    path = results / "study" / "times.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("ran") and isinstance(entry.get("seconds"), (int, float)):
            rows.append(entry)
    return rows


def _spread(seconds: list[float]) -> str:
    if len(seconds) == 1:
        return _minutes(seconds[0])
    low, high = min(seconds), max(seconds)
    return f"{_minutes(statistics.median(seconds))} (median; {_minutes(low)} to {_minutes(high)})"


def study_runs(results: Path) -> dict[str, dict]:
    """The study's record of every run (``study/runs.json``: resolved config, checkpoint digest,
    machine), by run folder below results/runs, as the study's time ledger names them."""
    runs = _read_json(results / "study" / "runs.json") or {}
    return {
        folder.removeprefix("results/runs/"): entry or {}
        for folder, entry in runs.items()
        if folder.startswith("results/runs/")
    }


def study_rows(results: Path) -> list[list[str]]:
    """Median wall time per kind of study step: pretraining by view mode at the study's full
    length, one classification, one detection and one segmentation run."""
    ledger = _ledger(results)
    resolved_of = {
        folder: entry.get("resolved", {}) for folder, entry in study_runs(results).items()
    }
    groups: dict[str, list[float]] = {}
    for entry in ledger:
        kind, _, name = entry["step"].partition(" ")
        if kind != "classification" and entry["seconds"] < WHOLE_RUN_S:
            continue  # a resume, or a step that found its work done
        if kind == "pretrain":
            resolved = resolved_of.get(name)
            if not resolved:
                continue
            steps = resolved["train"]["epochs"]
            mode = resolved["views"]["mode"]
            label = f"pretraining, one {mode}-view run of {steps} epochs"
        elif kind == "classification" and not name.startswith("floors"):
            label = "classification of one checkpoint (9 tasks, linear-lbfgs + knn)"
        elif kind in ("detection", "segmentation"):
            label = f"{kind}, one {name.split()[0]} run"
        else:
            continue
        groups.setdefault(label, []).append(float(entry["seconds"]))
    rows = []
    for label in sorted(groups, key=lambda g: (not g.startswith("pretraining"), g)):
        n = len(groups[label])
        rows.append([label, _spread(groups[label]), f"study ledger, {n} runs"])
    return rows


def bench_rows(results: Path) -> list[list[str]]:
    """`make bench`'s time, the sum of its sections' own times."""
    sections = [_read_json(p) for p in sorted((results / "bench").glob("*.json"))]
    seconds = [float(s["section_s"]) for s in sections if s and "section_s" in s]
    if not seconds:
        return []
    return [["`make bench` (all sections)", _minutes(sum(seconds)), "`results/bench/*.json`"]]


def timing_lines(results: Path) -> list[str]:
    """The timing table, or one line saying that nothing has been measured yet."""
    rows = [*make_all_rows(results), *study_rows(results), *bench_rows(results)]
    if not rows:
        return ["No measured times yet (`make all`, `make study`, `make bench` write them)."]
    return markdown.table(["step", "wall time", "measured by"], rows)
