"""`make all`'s wall time per stage, read from its own log (``results/runs/make_all.jsonl``, one
line per stage run, written by ``scripts/run_all.py``); nothing is run. The last entry of every
stage counts: a re-run that skipped finished work logs its (short) time too, so ``runs`` says how
many entries a stage has. Stages run side by side, so the total is the run's own wall time (its
``total`` line), not their sum; logs from before that line existed are summed."""

from __future__ import annotations

import json
from pathlib import Path

from bench.timing import Options
from core import markdown as md

TITLE = "make all: wall time per stage"


def read_stages(path: Path) -> tuple[list[dict[str, object]], float | None]:
    """Last entry per stage, in the order stages first appear, and the last run's wall total (None
    in logs without one); unreadable lines are skipped."""
    last: dict[str, dict[str, object]] = {}
    counts: dict[str, int] = {}
    total = None
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            name, seconds = str(entry["stage"]), float(entry["seconds"])
        except (ValueError, KeyError, TypeError):
            continue
        if entry.get("kind") == "total":
            total = seconds
            continue
        counts[name] = counts.get(name, 0) + 1
        last[name] = {
            "stage": name,
            "seconds": seconds,
            "started_s": entry.get("started_s"),
            "time": entry.get("time"),
            "runs": counts[name],
        }
    return list(last.values()), total


def run(opts: Options) -> dict[str, object]:
    path = Path(opts.make_log)
    if not path.is_file():
        return {"log": str(path), "skipped": "no make all log yet (run `make all`)"}
    stages, total = read_stages(path)
    summed = sum(float(s["seconds"]) for s in stages)
    return {
        "log": str(path),
        "stages": stages,
        "total_s": summed if total is None else total,
        "stage_sum_s": summed,
    }


def markdown(result: dict[str, object]) -> str:
    if "skipped" in result:
        return f"{result['skipped']}: {result['log']} not found."
    rows = [
        [
            row["stage"],
            "" if row.get("started_s") is None else f"{row['started_s'] / 60:.1f}",
            f"{row['seconds']:.0f}",
            f"{row['seconds'] / 60:.1f}",
            row["time"] or "",
            str(row["runs"]),
        ]
        for row in result["stages"]
    ]
    total = result["total_s"]
    summed = result.get("stage_sum_s", total)  # records from before stages ran side by side
    rows.append(["**total (wall)**", "", f"{total:.0f}", f"{total / 60:.1f}", "", ""])
    header = ["stage", "started (min)", "seconds", "minutes", "finished", "entries"]
    lines = [
        f"From `{result['log']}` (last entry of each stage). Stages run side by side where they do",
        "not wait on each other (`started`: minutes after `make all` began); the total is the wall",
        f"time of the whole run (the stages' own times add up to {summed / 60:.1f} min).",
        "",
        *md.table(header, rows),
    ]
    return "\n".join(lines)
