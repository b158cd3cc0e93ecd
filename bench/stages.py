"""`make all`'s wall time per stage, read from its own log (``results/runs/make_all.jsonl``, one
line per stage run, written by ``scripts/run_all.sh``); nothing is run. The last entry of every
stage counts: a re-run that skipped finished work logs its (short) time too, so ``runs`` says how
many entries a stage has."""

from __future__ import annotations

import json
from pathlib import Path

from bench.timing import Options
from core import markdown as md

TITLE = "make all: wall time per stage"


def read_stages(path: Path) -> list[dict[str, object]]:
    """Last entry per stage, in the order stages first appear; unreadable lines are skipped."""
    last: dict[str, dict[str, object]] = {}
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            name, seconds = str(entry["stage"]), float(entry["seconds"])
        except (ValueError, KeyError, TypeError):
            continue
        counts[name] = counts.get(name, 0) + 1
        last[name] = {
            "stage": name,
            "seconds": seconds,
            "time": entry.get("time"),
            "runs": counts[name],
        }
    return list(last.values())


def run(opts: Options) -> dict[str, object]:
    path = Path(opts.make_log)
    if not path.is_file():
        return {"log": str(path), "skipped": "no make all log yet (run `make all`)"}
    stages = read_stages(path)
    return {"log": str(path), "stages": stages, "total_s": sum(s["seconds"] for s in stages)}


def markdown(result: dict[str, object]) -> str:
    if "skipped" in result:
        return f"{result['skipped']}: {result['log']} not found."
    rows = [
        [
            row["stage"],
            f"{row['seconds']:.0f}",
            f"{row['seconds'] / 60:.1f}",
            row["time"] or "",
            str(row["runs"]),
        ]
        for row in result["stages"]
    ]
    total = result["total_s"]
    rows.append(["**total**", f"{total:.0f}", f"{total / 60:.1f}", "", ""])
    lines = [
        f"From `{result['log']}` (last entry of each stage).",
        "",
        *md.table(["stage", "seconds", "minutes", "finished", "entries"], rows),
    ]
    return "\n".join(lines)
