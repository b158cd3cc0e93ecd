"""``python -m analysis sweeps``: one table per sensitivity sweep of the study.

  python -m analysis sweeps [--results results]

The study (``make study``) writes ``results/study/index.json``: per sweep and variant, its config
overrides and run folders. Each table has one row per variant and the linear-probe top-1 of the nine
factor tasks (orient from cls-rot), their mean, and the mean's difference to the base variant (the
one without overrides), read from the classification records of those runs
(``records/classification.jsonl`` and ``records/sweeps.jsonl``). Written to
``tables/sweep_<name>.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePath

import pandas as pd

from analysis import tables
from core import markdown as md
from core.io import atomic_write_text
from core.numerics import NUMERICS, is_current
from core.records import ckpt_field, read_records

TASKS = ("shape", "hue", "orient", "chiral", "texture", "size", "pos", "bg", "light")
#: Task groups of the report: what an invariance to the ops should keep (content) and what the ops
#: change, so that a method invariant to them loses it (variant factors).
GROUPS = {
    "content": ("shape", "size", "pos"),
    "variant factors": ("hue", "chiral", "texture", "light"),
}
RECORD_FILES = ("classification.jsonl", "sweeps.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: study/index.json and records/ in, tables/ out (default: %(default)s)",
    )


def _same_folder(a: PurePath, b: PurePath) -> bool:
    """Run folders written relative or absolute: equal when the shorter is a tail of the longer."""
    k = min(len(a.parts), len(b.parts))
    return k > 0 and a.parts[-k:] == b.parts[-k:]


def probe_results(records: pd.DataFrame) -> pd.DataFrame:
    """Latest linear-probe top-1 per (run folder, task, seed) of the factor tasks: columns folder,
    task, value."""
    part = records[
        (records["stage"] == "classification")
        & (records["protocol"] == "linear-lbfgs")
        & (records["metric"] == "top1")
        & records["task"].isin(TASKS)
    ].copy()
    part["folder"] = part["pretrain_ckpt"].map(
        lambda r: PurePath(path).parent if (path := ckpt_field(r, "path")) else None
    )
    part = part[part["folder"].notna()]
    # orient: cls-rot
    part = part[(part["dataset"] != "factorshapes/cls-upright") | (part["task"] != "orient")]
    when = pd.to_datetime(part["time"], utc=True, errors="coerce", format="ISO8601")
    part = part.loc[when.sort_values(kind="stable").index]
    part["key"] = part["folder"].map(str)
    return part.drop_duplicates(["key", "task"], keep="last")[["folder", "task", "value"]]


def _entries(folders, ledger: dict) -> list[dict]:
    """The study ledger's entries of the runs behind ``folders``."""
    return [
        entry
        for key, entry in ledger.items()
        if any(_same_folder(PurePath(key), PurePath(f)) for f in folders)
    ]


def _numerics(entries: list[dict]) -> float:
    """The oldest numerics version (core/numerics.py) among ledger ``entries`` (an entry without one
    predates versions: 1); NaN when there are none."""
    versions = [entry.get("numerics", 1) for entry in entries]
    return float(min(versions)) if versions else float("nan")


def _entry_current(entry: dict) -> bool:
    if not entry.get("resolved"):  # config unknown: current only at today's version
        return entry.get("numerics", 1) == NUMERICS
    return is_current(entry.get("numerics", 1), entry["resolved"])


def _current(entries: list[dict]) -> str:
    """``yes`` when every ledger entry of ``entries`` matches today's arithmetic
    (core.numerics.is_current), ``no`` when one does not (``make study`` retrains it), ``–`` when
    there are none."""
    if not entries:
        return "–"
    return "yes" if all(_entry_current(e) for e in entries) else "no"


def per_run_scores(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per run folder (as text) with every task measured: the nine tasks, in ``TASKS``
    order."""
    per_run = probes.pivot_table(index=probes["folder"].map(str), columns="task", values="value")
    return per_run.reindex(columns=list(TASKS)).dropna()


def _seed_spread(probes: pd.DataFrame) -> float:
    """Sample std over runs of each run's nine-task mean (NaN below two complete runs)."""
    means = per_run_scores(probes).mean(axis=1)
    return float(means.std(ddof=1)) if len(means) > 1 else float("nan")


def sweep_table(variants: dict, probes: pd.DataFrame, ledger: dict | None = None) -> pd.DataFrame:
    """Rows: variants; columns: overrides, n, numerics (of the runs measured), the nine tasks (mean
    over the variant's runs), mean, mean std (over runs, of each run's nine-task mean), delta."""
    rows = []
    for name, spec in variants.items():
        runs = [PurePath(r) for r in spec["runs"]]
        mine = probes[
            probes["folder"].map(lambda f, runs=runs: any(_same_folder(f, r) for r in runs))
        ]
        per_task = mine.groupby("task")["value"].mean()
        n = mine["folder"].map(str).nunique()
        row = {
            "variant": name,
            "overrides": " ".join(spec["overrides"]) or "(base config)",
            "n": n,
            "numerics": _numerics(entries := _entries(set(mine["folder"]), ledger or {})),
            "current": _current(entries),
        }
        row.update({t: per_task.get(t, float("nan")) for t in TASKS})
        complete = all(t in per_task for t in TASKS)
        row["mean"] = float(per_task[list(TASKS)].mean()) if complete else float("nan")
        for group, tasks in GROUPS.items():
            row[group] = float(per_task[list(tasks)].mean()) if complete else float("nan")
        row["mean std"] = _seed_spread(mine) if complete else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    base = table.loc[table["overrides"] == "(base config)", "mean"]
    table["vs base"] = table["mean"] - (base.iloc[0] if len(base) else float("nan"))
    return table


def markdown(table: pd.DataFrame) -> str:
    def cell(value, column):
        if isinstance(value, str):
            return f"`{value}`" if column == "overrides" and not value.startswith("(") else value
        if pd.isna(value):
            return "–"
        if column in ("n", "numerics"):
            return str(int(value))
        return f"{value:+.1f}" if column == "vs base" else f"{value:.1f}"

    def mean_cell(row):
        spread = row.get("mean std", float("nan"))
        if pd.isna(row["mean"]):
            return "–"
        return tables.format_cell(row["mean"], spread, count=False)

    columns = [c for c in table.columns if c != "mean std"]
    rows = [
        [mean_cell(r) if c == "mean" else cell(r[c], c) for c in columns]
        for _, r in table.iterrows()
    ]
    return "\n".join(md.table(columns, rows))


def load_index(results: Path) -> dict:
    path = results / "study" / "index.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path}: run `make study` (or `make study ARGS=--dry-run`) to write it"
        )
    return json.loads(path.read_text())


def sweep_tables(results: Path) -> dict[str, pd.DataFrame]:
    index = load_index(results)
    records = read_records(
        [results / "records" / f for f in RECORD_FILES if (results / "records" / f).is_file()]
    )
    probes = (
        probe_results(records)
        if not records.empty
        else pd.DataFrame(columns=["folder", "task", "value"])
    )
    ledger_path = results / "study" / "runs.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    return {
        name: sweep_table(variants, probes, ledger)
        for name, variants in index.get("sweeps", {}).items()
    }


def run(args: argparse.Namespace) -> list[Path]:
    written = []
    for name, table in sweep_tables(args.results).items():
        out = args.results / "tables" / f"sweep_{name}"
        written.append(
            atomic_write_text(out.with_suffix(".md"), f"## Sweep: {name}\n\n{markdown(table)}\n")
        )
        written.append(atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False)))
    return written
