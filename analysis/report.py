"""``python -m analysis report``: ``results/README.md`` from records, tables, figures and run logs.

The report says what was run (runs, seeds, commits, versions), shows every table, checks the paper's
three qualitative claims against these results in plain words (including where they are not
supported), shows every figure, and lists what is missing. It reads only files; a partial set (no
detection yet, no MAST run) still builds and names the missing parts and the command that makes
them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path, PurePath

import pandas as pd

from analysis import sweeps, tables
from analysis.timings import WHOLE_RUN_S, study_runs, timing_lines
from core import markdown
from core.cli import git_commit
from core.config import read_yaml
from core.env import versions
from core.io import atomic_write_text
from core.numerics import NUMERICS
from core.records import ckpt_field, read_records

FACTOR_FAMILY = ("classification", "factorshapes/cls-upright", "linear-lbfgs")
ORIENT_FAMILY = ("classification", "factorshapes/cls-rot", "linear-lbfgs")
#: What the analysis itself runs on, beside the packages every record names.
ANALYSIS_PACKAGES = ("pandas", "matplotlib", "scikit-learn")
#: What makes each missing part, for the "missing" list.
MAKERS = {
    "classification": "make eval-cls",
    "detection": "make eval-detection",
    "segmentation": "make eval-segmentation",
    "masks": "make pretrain (a MAST run), then make analysis",
    "uncertainty": "make pretrain (a MAST run), then make analysis",
    "vicreg": "make all (pretrains vicreg too) or python -m pretrain --config "
    "configs/pretrain/vicreg_*.yaml",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: records/, tables/, figures/ in, README.md out (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("results/runs"),
        help="pretraining run folders, for the 'what was run' section (default: %(default)s)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="a README whose results-summary block (between the markers) is rewritten; default: "
        "the README.md beside the results folder, left alone when it has no markers",
    )


# ---------------------------------------------------------------------------------------------
# sections
def software() -> str:
    """``torch 2.x, ...``: the versions behind the report (``core.env.versions``)."""
    found = versions(extra=ANALYSIS_PACKAGES)
    return ", ".join(f"{name} {v}" for name, v in found.items() if v is not None)


def _is_pretraining_run(folder: Path) -> bool:
    """A pretraining run folder (other stages' output folders also hold config.yaml and
    log.jsonl)."""
    if not ((folder / "config.yaml").is_file() and (folder / "log.jsonl").is_file()):
        return False
    try:
        return json.loads((folder / "run.json").read_text()).get("stage") == "pretrain"
    # no run.json (copied from elsewhere): a config that names a method
    except (
        OSError,
        ValueError,
    ):
        return "method" in read_yaml(folder / "config.yaml")


RUN_COLUMNS = ("run", "method", "seed", "epochs", "steps", "final_loss", "img_per_s")
RUNS_CSV = Path("tables") / "pretraining_runs.csv"


def pretraining_runs(runs_dir: Path, results: Path | None = None) -> pd.DataFrame:
    """One row per pretraining run folder under ``runs_dir``; with ``results``, plus the rows of
    ``results/tables/pretraining_runs.csv`` whose folders are gone (see
    ``tables.keep_gone_runs``)."""
    rows = []
    for folder in sorted(p for p in runs_dir.glob("*") if _is_pretraining_run(p)):
        cfg = read_yaml(folder / "config.yaml")
        steps = [
            json.loads(line)
            for line in (folder / "log.jsonl").read_text().splitlines()
            if '"loss"' in line
        ]
        last = steps[-1] if steps else {}
        speed = (
            pd.Series([s.get("img_per_s") for s in steps], dtype=float).median()
            if steps
            else math.nan
        )
        rows.append(
            {
                "run": folder.name,
                "method": cfg.get("method"),
                "seed": cfg.get("seed"),
                "epochs": cfg.get("train", {}).get("epochs"),
                "steps": last.get("step"),
                "final_loss": last.get("loss", math.nan),
                "img_per_s": speed,
            }
        )
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return (
        tables.keep_gone_runs(table, results / RUNS_CSV, runs_dir) if results is not None else table
    )


def _number(value, digits: int) -> str:
    return "-" if pd.isna(value) else (f"{value:.{digits}f}" if digits else f"{value:.0f}")


def runs_section(runs: pd.DataFrame, runs_dir: Path) -> list[str]:
    if runs.empty:
        return [
            f"No pretraining run folders under `{runs_dir}` (checkpoints may come from "
            "elsewhere; the records below name them)."
        ]
    gone = tables.GONE_MARK
    rows = [
        [
            f"`{r.run.removesuffix(gone)}`{gone if r.run.endswith(gone) else ''}",
            r.method,
            _number(r.seed, 0),
            _number(r.epochs, 0),
            _number(r.steps, 0),
            _number(r.final_loss, 3),
            _number(r.img_per_s, 0),
        ]
        for r in runs.itertuples(index=False)
    ]
    note = (
        [
            f"†: the run's folder is not under `{runs_dir}` (a fresh checkout holds no runs); "
            "its row is kept from the last `make analysis` that saw it.",
            "",
        ]
        if runs["run"].str.endswith(tables.GONE_MARK).any()
        else []
    )
    header = ["run", "method", "seed", "epochs", "steps", "final loss", "median img/s"]
    return [*note, *markdown.table(header, rows)]


def records_section(records: pd.DataFrame) -> list[str]:
    if records.empty:
        return ["No records yet."]
    rows = []
    for stage, part in records.groupby("stage"):
        rows.append(
            [
                stage,
                str(len(part)),
                ", ".join(sorted(part["method"].unique())),
                ", ".join(str(s) for s in sorted(part["seed"].unique())),
                ", ".join(sorted({str(c)[:7] for c in part["git_commit"].dropna()})),
            ]
        )
    return markdown.table(["stage", "records", "methods", "seeds", "commits"], rows)


def diverged_section(records: pd.DataFrame) -> list[str]:
    """The runs recorded as diverged (null values with a reason), which the tables leave out."""
    if "diverged" not in records or not records["diverged"].notna().any():
        return []
    part = records[records["diverged"].notna()]
    keys = ["stage", "dataset", "protocol", "method", "arch", "seed", "diverged"]
    rows = [[str(v) for v in row] for row in part[keys].drop_duplicates().itertuples(index=False)]
    return [
        "",
        "Runs that diverged (recorded with null values, left out of the tables and their n):",
        "",
        *markdown.table(["stage", "data", "protocol", "method", "arch", "seed", "why"], rows),
    ]


def tables_section(aggregated: pd.DataFrame, records: pd.DataFrame | None = None) -> list[str]:
    if aggregated.empty:
        return ["No tables: no records yet."]
    lines = []
    published = tables.load_published()
    for family in tables.families(aggregated):
        table = tables.pivot(aggregated, family, published)
        lines += [
            f"### {family}",
            "",
            table.attrs.get("caption", ""),
            "",
            tables.markdown_table(table),
            "",
        ]
    transfer = tables.transfer_table(records if records is not None else pd.DataFrame())
    lines += [
        "### Transfer (AugSelf's linear protocol)",
        "",
        *(
            [
                "Frozen features at 96 px, L-BFGS logistic regression with the L2 weight chosen "
                "on validation among 45 values (`configs/classification/transfer_*.yaml`); top-1, "
                "or mean per-class accuracy for Pets, Flowers and Caltech-101.",
                "",
                tables.markdown_table(transfer),
            ]
            if not transfer.empty
            else ["Not run yet: `configs/classification/transfer_<data>.yaml` on a checkpoint."]
        ),
        "",
    ]
    lines += [
        "### Published reference numbers (from the literature, not ours)",
        "",
        tables.markdown_table(tables.published_table(published)),
        "",
    ]
    return lines


REAL_DATASET = "fashion_mnist"


def _mean_se(values: pd.Series) -> tuple[float, float, int]:
    """Mean, standard error (0 for one value: the pixels are deterministic) and count."""
    n = len(values)
    return float(values.mean()), float(values.std() / n**0.5) if n > 1 else 0.0, n


def real_data_section(measured: pd.DataFrame) -> list[str]:
    """``make real``: each pretrained row's linear-lbfgs top-1 on Fashion-MNIST against the raw
    pixels and random init of the same split, differences beyond 2 standard errors marked."""
    family = tables.family_name("classification", REAL_DATASET, "linear-lbfgs")
    rows = measured[measured["family"] == family] if not measured.empty else measured
    if rows.empty:
        return [
            "Not run yet: `make real` (Fashion-MNIST; "
            "`sudo apt-get install dataset-fashion-mnist`)."
        ]
    stats = {label: _mean_se(part["value"]) for label, part in rows.groupby("label")}
    refs = [r for r in (tables.PIXELS, tables.FLOOR, tables.CEILING) if r in stats]
    ours = [label for label in stats if label not in REFERENCES]
    cells = [
        [label, f"{m:.1f} ± {se:.1f}" if n > 1 else f"{m:.1f}", str(n)]
        for label in ours + refs
        for m, se, n in [stats[label]]
    ]
    lines = [
        "Linear-probe top-1 (linear-lbfgs) on the Fashion-MNIST test set, mean ± standard error "
        "over seeds; every row computed by the suite on the same split (`make real`; the kNN and "
        "supervised tables are under Tables).",
        "",
        *markdown.table(["row", "top-1", "n"], cells),
        "",
    ]
    for label in ours:
        m, se, _ = stats[label]
        verdicts = []
        for ref in (r for r in (tables.PIXELS, tables.FLOOR) if r in stats):
            rm, rse, _ = stats[ref]
            diff, both = m - rm, (se**2 + rse**2) ** 0.5
            clear = " (beyond 2 SE)" if both > 0 and abs(diff) > 2 * both else ""
            verdicts.append(f"{diff:+.1f} against {ref}{clear}")
        beats = all(
            m - stats[r][0] > 2 * (se**2 + stats[r][1] ** 2) ** 0.5
            for r in (tables.PIXELS, tables.FLOOR)
            if r in stats
        )
        verdict = "yes" if beats else "**no**"
        lines.append(f"- {label}: {', '.join(verdicts)}; beats both beyond 2 SE: {verdict}.")
    return lines


# ----------------------------------------------------------------------------------------------
# claims
def _family_scores(measured: pd.DataFrame, family: tuple[str, str, str]) -> pd.DataFrame:
    stage, dataset, protocol = family
    part = measured[
        (measured["stage"] == stage)
        & (measured["dataset"] == dataset)
        & (measured["protocol"] == protocol)
    ]
    return part.pivot_table(
        index=["label", "checkpoint", "seed"], columns="task", values="value", aggfunc="first"
    )


def main_label(labels, method: str) -> str | None:
    """The row of ``method``'s own config: the label ``method`` itself, or ``method
    (<method>_<arch>_...)`` when the method has several configs (e.g. ``mast (mast_factorized_...)``
    is a variant, not MAST's row)."""
    labels = list(labels)
    if method in labels:
        return method
    own = [label for label in labels if label.startswith(f"{method} ({method}_r")]
    return sorted(own)[0] if own else None


def factor_scores(measured: pd.DataFrame) -> pd.DataFrame:
    """Linear-probe top-1 per measurement (rows: label, checkpoint, seed) and factor task (columns);
    orient from cls-rot, joined on the same checkpoint and seed."""
    upright = _family_scores(measured, FACTOR_FAMILY).drop(columns=["orient"], errors="ignore")
    rot = _family_scores(measured, ORIENT_FAMILY)
    if "orient" in rot.columns:
        upright = upright.join(rot[["orient"]], how="outer")
    return upright


def seed_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per label: mean, std and n of every task, and of the task mean over the seeds that have every
    task."""
    by_label = scores.groupby(level="label")
    complete = scores.dropna()
    task_mean = complete.mean(axis=1).groupby(level="label")
    # A label with no seed covering every task (e.g. a ceiling trained per data set): the mean of
    # its task means.
    means = by_label.mean()
    overall = task_mean.mean().reindex(means.index).fillna(means.mean(axis=1))
    parts = {
        "mean": means.assign(mean=overall),
        "std": by_label.std().assign(mean=task_mean.std()),
        "n": by_label.count().assign(mean=task_mean.count().reindex(means.index).fillna(1)),
    }
    return pd.concat(parts, axis=1)  # columns: (statistic, task), the last task being "mean"


def _cell(summary: pd.DataFrame, label: str, task: str) -> str:
    mean, std, n = (summary.loc[label, (stat, task)] for stat in ("mean", "std", "n"))
    if pd.isna(mean):
        return "–"
    return tables.format_cell(mean, std, n, count=False)


def difference(summary: pd.DataFrame, label: str, reference: str) -> pd.DataFrame:
    """``label - reference`` per column, with whether it exceeds twice its standard error over
    seeds."""
    mean, std, n = (summary[stat] for stat in ("mean", "std", "n"))
    diff = (mean.loc[label] - mean.loc[reference]).dropna()
    se = (std.loc[label] ** 2 / n.loc[label] + std.loc[reference] ** 2 / n.loc[reference]) ** 0.5
    clear = (diff.abs() > 2 * se[diff.index]).fillna(False)  # no std (n=1): never called clear
    return pd.DataFrame({"diff": diff, "se": se[diff.index], "clear": clear})


def _without_top_text(top: tuple[str, float, pd.Series] | None) -> str:
    """``without_top_task``'s result as a clause ("without its largest gain (texture, ...)")."""
    if top is None:
        return ""
    task, gain, rest = top
    spread = (
        "beyond 2 standard errors"
        if rest["clear"]
        else "within 2 standard errors"
        if pd.notna(rest["se"])
        else "no spread to test"
    )
    return (
        f"without its largest gain ({task}, {gain:+.1f}) the mean difference is "
        f"{rest['diff']:+.1f} ({spread})"
    )


def _difference_text(
    name: str, diff: pd.DataFrame, top: tuple[str, float, pd.Series] | None = None
) -> str:
    tasks = diff.drop(index="mean")
    wins = [t for t, d in tasks["diff"].items() if d >= 0]
    better = [t for t, row in tasks.iterrows() if row["clear"] and row["diff"] > 0]
    worse = [t for t, row in tasks.iterrows() if row["clear"] and row["diff"] < 0]
    clear = " (beyond 2 standard errors)" if diff.loc["mean", "clear"] else ""
    spread = (
        f"Beyond 2 standard errors of the seed spread: better on {', '.join(better) or 'none'}, "
        f"worse on {', '.join(worse) or 'none'}."
        if tasks["se"].notna().any()
        else "A single seed on a side: no spread to test against."
    )
    rest = _without_top_text(top)
    return (
        f"{name} >= VICReg on {len(wins)} of {len(tasks)} factor tasks "
        f"({', '.join(wins) or 'none'}); mean "
        f"difference {diff.loc['mean', 'diff']:+.1f} points{clear}"
        + (f"; {rest}" if rest else "")
        + f". {spread}"
    )


#: The reference rows (floor and ceiling), never compared as methods.
REFERENCES = (tables.FLOOR, tables.PIXELS, tables.CEILING)


def row_order(labels, *first: str) -> list[str]:
    """``first`` (the compared rows), then the other methods by name, then the floor and ceiling
    references."""
    references = [r for r in REFERENCES if r in labels]
    return [*first, *sorted(set(labels) - {*first, *references}), *references]


# The transfer metrics of the summary: (column name, (stage, dataset, protocol, task, metric)).
SUMMARY_METRICS = [
    (
        "box AP (Faster R-CNN)",
        ("detection", "factorshapes/det", "embedded-frcnn", "shape", "box_AP"),
    ),
    (
        "mask AP (Mask R-CNN)",
        ("segmentation", "factorshapes/det", "embedded-mrcnn", "shape", "mask_AP"),
    ),
]


def _of_metric(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``frame`` measuring one summary metric, ``key`` as in ``SUMMARY_METRICS``."""
    keep = pd.Series(True, index=frame.index)
    for column, value in zip(("stage", "dataset", "protocol", "task", "metric"), key):
        keep &= frame[column] == value
    return frame[keep]


def _metric_cell(aggregated: pd.DataFrame, label: str, key: tuple[str, ...]) -> str:
    part = _of_metric(aggregated, key)
    row = part[part["label"] == label]
    if row.empty:
        return "–"
    mean, std, n = row.iloc[0][["mean", "std", "n"]]
    return tables.format_cell(mean, std, n)


def pretrain_seconds(results: Path) -> dict[str, float]:
    """Wall time of every pretraining run in the study's ledger (``study/times.jsonl``): its latest
    whole pretraining step (the run whose checkpoint the records measured; shorter entries are
    resumes or steps that found the run done), by run folder under the runs folder."""
    ledger = results / "study" / "times.jsonl"
    seconds: dict[str, float] = {}
    if not ledger.is_file():
        return seconds
    for line in ledger.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        kind, _, folder = str(entry.get("step", "")).partition(" ")
        if kind == "pretrain" and float(entry.get("seconds", 0.0)) >= WHOLE_RUN_S:
            seconds[folder] = float(entry["seconds"])
    return seconds


def pretrain_cpus(results: Path) -> dict[str, str]:
    """The CPU each pretraining run of the study's ledger (``study/runs.json``) was trained on,
    where it was recorded, by run folder under the runs folder, the name shortened."""
    cpus = {}
    for folder, entry in study_runs(results).items():
        cpu = (entry.get("machine") or {}).get("cpu")
        if cpu:
            short = re.sub(r"\((R|TM)\)| Processor| CPU", "", str(cpu))
            cpus[folder] = " ".join(short.split())
    return cpus


def _compute_cell(
    measured: pd.DataFrame,
    label: str,
    seconds: dict[str, float],
    cpus: dict[str, str] | None = None,
) -> str:
    """Median pretraining wall time of the runs behind ``label``'s records, or – if the ledger has
    none of them; where the study's runs were trained on more than one CPU (``cpus``:
    ``pretrain_cpus``), the CPUs of these runs that were recorded."""
    ckpts = measured.loc[measured["label"] == label, "pretrain_ckpt"]
    paths = {str(ckpt_field(c, "path") or "") for c in ckpts}
    # the ledger names run folders relative to the study's runs folder (results/runs)
    folders = {
        str(PurePath(p).parent.relative_to("results/runs"))
        for p in paths
        if p.startswith("results/runs/")
    }
    times = [seconds[f] for f in folders if f in seconds]
    if not times:
        return "–"
    cpus = cpus or {}
    mine = sorted({cpus[f] for f in folders if f in seconds and f in cpus})
    where = f"; {', '.join(mine)}" if mine and len(set(cpus.values())) > 1 else ""
    return f"{statistics.median(times) / 60:.1f} min (n={len(times)}{where})"


def summary_section(
    measured: pd.DataFrame,
    aggregated: pd.DataFrame,
    details: str = "`results/README.md`",
    seconds: dict[str, float] | None = None,
    cpus: dict[str, str] | None = None,
) -> list[str]:
    """One row per method: the nine-task linear-probe mean, detection box AP and mask AP, mean ± std
    over seeds, and with ``seconds`` (``pretrain_seconds``) the median pretraining wall time of its
    runs, naming their CPU where ``cpus`` (``pretrain_cpus``) holds several; ``details`` says where
    the per-task tables are (the report itself says "below")."""
    scores = factor_scores(measured) if not measured.empty else pd.DataFrame()
    if scores.empty:
        return [
            "No factor-task records yet: run `make study` (or `make eval`), then `make analysis`."
        ]
    summary = seed_summary(scores)
    labels = list(summary.index)
    first = [label for label in (main_label(labels, "vicreg"), main_label(labels, "mast")) if label]
    names = ["factor tasks, linear probe (mean of 9)"] + [name for name, _ in SUMMARY_METRICS]
    if seconds is not None:
        names.append("pretraining wall time")
    rows = []
    for label in row_order(labels, *first):
        n = int(summary.loc[label, ("n", "mean")])
        probe = f"{_cell(summary, label, 'mean')} (n={n})"
        metrics = [_metric_cell(aggregated, label, key) for _, key in SUMMARY_METRICS]
        if seconds is not None:
            metrics.append(_compute_cell(measured, label, seconds, cpus))
        rows.append([label, probe, *metrics])
    compute = (
        " Pretraining wall time: the median over the label's runs of each run's latest whole "
        "pretraining step in the study's ledger (`study/times.jsonl`; 2 CPU cores, at times shared "
        "with other work), with the CPU of the runs where the study's runs were trained on several "
        "and it was recorded (`study/runs.json`): wall times compare only on one CPU."
        if seconds is not None
        else ""
    )
    return markdown.table(["method", *names], rows) + [
        "",
        "Mean ± sample std over pretraining seeds (n); detection and segmentation on the "
        "embedded det split's shape categories. Per-task tables, the claim checks and every "
        f"figure: {details}.{compute}",
    ]


def transfer_scores(measured: pd.DataFrame) -> pd.DataFrame:
    """Box AP and mask AP of the summary (``SUMMARY_METRICS``) per measurement (rows: label,
    checkpoint, seed), one column each, named as in the summary."""
    columns = []
    for name, key in SUMMARY_METRICS:
        part = _of_metric(measured, key)
        if not part.empty:
            values = part.groupby(["label", "checkpoint", "seed"])["value"].first()
            columns.append(values.rename(name))
    if not columns:
        return pd.DataFrame(
            index=pd.MultiIndex.from_tuples([], names=["label", "checkpoint", "seed"])
        )
    return pd.concat(columns, axis=1)


def best_per_task(
    summary: pd.DataFrame, labels: list[str], columns: list[str] | None = None
) -> list[str]:
    """A table: per column of ``summary`` (default: its tasks, then the mean), the pretrained row
    with the highest score and the rows it does not beat by more than twice the standard error of
    the difference (ties); references (random-init, supervised) aside."""
    rows = []
    candidates = [label for label in row_order(labels) if label not in REFERENCES]
    means = summary["mean"].loc[candidates]
    if columns is None:
        columns = [c for c in means.columns if c != "mean"] + ["mean"]
    for column in columns:
        scores = means[column].dropna()
        if scores.empty:
            continue
        best = str(scores.idxmax())
        ties = [
            f"`{label}` ({scores[label]:.1f})"
            for label in scores.sort_values(ascending=False).index
            if label != best and not difference(summary, best, label).loc[column, "clear"]
        ]
        rows.append(
            [column, f"`{best}`", _cell(summary, best, column), ", ".join(ties) or "none: clear"]
        )
    return markdown.table(["task", "best", "score", "within 2 SE of the best"], rows)


def claim_invariances(measured: pd.DataFrame) -> tuple[list[str], list[str]]:
    """MAST (and its view variants) vs VICReg per factor task, mean ± std over seeds; returns
    (lines, missing)."""
    scores = (
        factor_scores(measured)
        if not measured.empty
        else pd.DataFrame(index=pd.Index([], name="label"))
    )
    labels = sorted(set(scores.index.get_level_values("label")))
    mast, vicreg = main_label(labels, "mast"), main_label(labels, "vicreg")
    missing = [m for m, label in (("mast", mast), ("vicreg", vicreg)) if label is None]
    if missing:
        return [
            f"Not checked: no linear-probe records of {' and '.join(missing)} on the factor tasks."
        ], missing
    summary = seed_summary(scores)
    # every other MAST config: mast's variants and the MAST methods' configs (e.g. mast_nounc
    # (mast_and_target_...))
    variants = [label for label in labels if label != mast and re.match(r"mast\w* \(mast_", label)]
    diffs = {label: difference(summary, label, vicreg) for label in (mast, *variants)}
    tops = {label: without_top_task(scores, label, vicreg) for label in diffs}
    columns = [c for c in diffs[mast].index if c != "mean"] + ["mean"]
    rows = []
    for label in row_order(labels, mast, vicreg):
        seeds = int(summary.loc[label, "n"].max())
        rows.append([label, str(seeds), *(_cell(summary, label, c) for c in columns)])
    for label, diff in diffs.items():
        cells = [
            f"{diff.loc[c, 'diff']:+.1f}{'*' if diff.loc[c, 'clear'] else ''}"
            if c in diff.index
            else "–"
            for c in columns
        ]
        rows.append([f"{label} − vicreg", "", *cells])  # no seed count for a difference
    lines = markdown.table(["method", "seeds", *columns], rows)

    best = max(diffs, key=lambda label: diffs[label].loc["mean", "diff"])

    def carried(label: str) -> str:
        """Where a row supports the claim through one task: say so."""
        top = tops[label]
        if verdict(diffs[label]) != "supports" or top is None or top[2]["clear"]:
            return ""
        return f", through one task: {_without_top_text(top)}"

    lines += [
        "",
        "Cells: linear-probe top-1 (%), mean ± sample std over seeds; `mean`: the nine-task mean "
        "per seed, "
        "then over seeds. Differences marked * exceed twice their standard error over seeds.",
        "",
    ]
    lines += [
        f"- {_difference_text('MAST' if label == mast else f'`{label}`', diff, tops[label])}"
        for label, diff in diffs.items()
    ]
    transfer = transfer_scores(measured)
    winners = best_per_task(summary, labels)
    if not transfer.empty:
        # box and mask AP in the same table, each compared over the seeds that measured it
        transfer_summary = seed_summary(transfer)
        names = list(transfer.columns)  # SUMMARY_METRICS' order, those with records
        winners += best_per_task(transfer_summary, list(transfer_summary.index), names)[2:]
    lines += [
        "",
        "Best pretrained row per factor task (linear-probe top-1), on their mean, and on box AP "
        "and mask AP (every method and MAST configuration above; references aside), and the rows "
        "it does not beat beyond two standard errors:",
        "",
        *winners,
    ]
    lines += [
        "",
        f"On these results, MAST's own config against VICReg **{verdict(diffs[mast])}** the "
        f"claim that MAST helps tasks needing different invariances{carried(mast)}"
        + (
            f"; the best MAST configuration, `{best}`, **{verdict(diffs[best])}** "
            f"it{carried(best)}."
            if best != mast
            else "."
        )
        + f" {VERDICT_RULE}",
    ]
    return lines, []


#: How ``verdict`` decides, as the report states it after the verdict.
VERDICT_RULE = (
    "(The verdict reads the nine-task mean: higher than VICReg's beyond two standard errors "
    "supports the claim, lower does not, anything else is inconclusive. The task counts above are "
    "point estimates, some inside the seed spread; the mean without a row's largest gain says "
    "whether one task carries it.)"
)


def verdict(diff: pd.DataFrame) -> str:
    """Claim 1's verdict from one row's differences with VICReg (``difference``): "supports",
    "does not support", or "is inconclusive on", from the nine-task mean beyond two standard
    errors. Counting tasks at or above VICReg flipped on tasks inside the seed spread (once when
    the default row was retrained with other rounding; docs/method.md); the mean does not."""
    if not diff.loc["mean", "clear"]:
        return "is inconclusive on"
    return "supports" if diff.loc["mean", "diff"] > 0 else "does not support"


def without_top_task(
    scores: pd.DataFrame, label: str, reference: str
) -> tuple[str, float, pd.Series] | None:
    """The task on which ``label`` gains most over ``reference``, that gain, and the mean's
    difference (``difference``'s row: diff, se, clear) over the other tasks; None with under two
    tasks or no task gained."""
    tasks = [c for c in scores.columns if c != "mean"]
    if len(tasks) < 2:
        return None
    pair = scores.loc[[label, reference]]
    gains = difference(seed_summary(pair), label, reference).drop(index="mean")["diff"]
    if not (gains > 0).any():
        return None
    top = str(gains.idxmax())
    rest = seed_summary(pair.drop(columns=[top]))
    return top, float(gains[top]), difference(rest, label, reference).loc["mean"]


def _chance_iou(p: float, q: float) -> float:
    """Expected IoU of two independent random dimension sets with inclusion rates p and q."""
    union = p + q - p * q
    return p * q / union if union > 0 else 0.0


def first_seed_only(paths: list[Path]) -> list[Path]:
    """Per-run outputs of the first seed (folder ``..._s0``) or of runs without a seed suffix."""
    return [
        p
        for p in paths
        if not tables.SEED_SUFFIX.search(p.parent.name) or p.parent.name.endswith("_s0")
    ]


def _change_text(change_rho: dict[str, float]) -> str:
    """The dimension-change check of one masks.json: rho >= 0.5 for every op means each op's
    dimensions are the ones that op actually changes (analysis.masks.change_correlation)."""
    valid = {op: r for op, r in change_rho.items() if r is not None and not math.isnan(r)}
    if not valid:
        return ""
    passed = [op for op, r in valid.items() if r >= 0.5]
    listed = ", ".join(f"{op} {r:+.2f}" for op, r in valid.items())
    verdict = (
        "every op's dimensions are the ones it changes"
        if len(passed) == len(valid)
        else f"{len(passed)} of {len(valid)} ops reach 0.5"
    )
    return (
        " Spearman's rho between a dimension's assignment to an op and its change under pairs "
        f"differing in that op alone: {listed}; {verdict}."
    )


def claim_masks(figures: Path) -> tuple[list[str], list[str]]:
    summaries = first_seed_only(sorted(figures.glob("masks/*/masks.json")))
    if not summaries:
        return ["Not checked: no mask analysis (needs a MAST checkpoint)."], ["masks"]
    lines = []
    for path in summaries:
        s = json.loads(path.read_text())
        ops, iou, dim = s["ops"], s["iou"], s["dim"]
        off = [iou[a][b] for a in range(len(ops)) for b in range(len(ops)) if a != b]
        sizes = {op: s["unique"][op] + s["shared"][op] for op in ops}
        chance = [_chance_iou(sizes[a] / dim, sizes[b] / dim) for a in ops for b in ops if a != b]
        mean_off, mean_chance = sum(off) / len(off), sum(chance) / len(chance)
        unique = sum(s["unique"].values())
        separated = mean_off < 0.8 * mean_chance or unique > 0.25 * dim
        lines.append(
            f"- `{s['label']}` ({s['mask_kind']} masks, {dim} dims): mean off-diagonal IoU "
            f"{mean_off:.2f} against {mean_chance:.2f} for random sets of the same sizes; "
            f"{unique} dims belong to one op only; densities "
            + ", ".join(f"{op} {s['density'][op]:.2f}" for op in ops)
            + ". "
            + (
                # an assignment's overlap cannot fail the check: say so instead of passing it
                "An AND assignment's sets are disjoint by construction, so their overlap says "
                "nothing of how the ops relate; the dimension-change check does."
                if str(s["mask_kind"]).startswith("assign")
                else "The masks separate the ops beyond chance."
                if separated
                else "**The masks are no more separated than random sets**: on this run they do "
                "not reveal how the augmentations relate."
            )
            + _change_text(s.get("change_rho") or {})
        )
    return lines, []


def claim_uncertainty(figures: Path) -> tuple[list[str], list[str]]:
    summaries = sorted(figures.glob("uncertainty/*/uncertainty.json"))
    if not summaries:
        return [
            "Not checked: no uncertainty analysis (needs a MAST run with an uncertainty head)."
        ], ["uncertainty"]
    by_config: dict[str, list[dict]] = {}
    for path in summaries:
        s = json.loads(path.read_text())
        by_config.setdefault(tables.SEED_SUFFIX.sub("", s["label"]), []).append(s)
    lines = []
    for config, runs in by_config.items():
        rhos = pd.DataFrame(
            [{op: v["spearman_rho"] for op, v in s["per_op"].items()} for s in runs], dtype=float
        )
        mean, std = rhos.mean(), rhos.std()
        valid = mean.dropna()
        positive = [op for op, r in valid.items() if r > 0.1]
        text = ", ".join(
            f"{op} {mean[op]:+.2f}" + (f" ± {std[op]:.2f}" if len(runs) > 1 else "")
            if not pd.isna(mean[op])
            else f"{op} n/a"
            for op in rhos.columns
        )
        verdict = "tracks" if len(positive) > len(valid) / 2 else "does **not** track"
        lines.append(
            f"- `{config}` ({len(runs)} run{'s' if len(runs) > 1 else ''}, {runs[0]['n_images']} "
            "images "
            f"each): Spearman's rho of uncertainty with difference strength"
            f"{' (mean ± std over seeds)' if len(runs) > 1 else ''}: {text}. Uncertainty {verdict} "
            f"difficulty for most ops (mean rho > 0.1 for {len(positive)} of {len(valid)})."
        )
        own = [s["per_view"] for s in runs if s.get("per_view")]
        if own:
            view_rhos = pd.DataFrame(
                [{op: v["spearman_rho"] for op, v in o.items()} for o in own], dtype=float
            ).mean()
            lines[-1] += (
                " Each view's own sigma^2 against its own distortion strength (what one view can "
                "know): "
                + ", ".join(
                    f"{op} {r:+.2f}" if not pd.isna(r) else f"{op} n/a"
                    for op, r in view_rhos.items()
                )
                + f" (mean over {len(own)} run{'s' if len(own) > 1 else ''})."
            )
    return lines, []


# ----------------------------------------------------------------------------------------------
# study
def sweeps_section(results: Path) -> list[str]:
    try:
        found = sweeps.sweep_tables(results)
    except FileNotFoundError:
        return ["No study index yet (`make study` writes `study/index.json`)."]
    if not found:
        return ["The study config has no sweeps."]
    lines = [
        "Linear-probe top-1 (%) of MAST with one open choice of docs/method.md changed at a time, "
        "on the study's sweep seeds; `mean` is over the nine factor tasks (± the sample std of the "
        "per-seed means when n > 1), `vs base` its difference to the base config (the study's own "
        "MAST run). `–`: not run yet. `numerics`: the version (core/numerics.py) of the "
        f"checkpoints measured (today's: {NUMERICS}); `current: no`: a change since then moves "
        "this row's numbers (core.numerics.is_current), it is not comparable with current rows, "
        "and `make study` retrains it.",
        "",
    ]
    for name, table in found.items():
        lines += [f"### {name}", "", sweeps.markdown(table), ""]
    return lines


def diagnostics_section(results: Path) -> list[str]:
    """``tables/diagnostics.md`` (``python -m analysis diagnostics``) without its heading."""
    path = results / "tables" / "diagnostics.md"
    if not path.is_file():
        return ["No diagnostics yet (`make analysis` writes them from the run folders)."]
    return path.read_text().splitlines()[2:]


def study_time_section(results: Path) -> list[str]:
    path = results / "study" / "times.jsonl"
    if not path.is_file():
        return ["No study steps recorded yet (`make study`)."]
    steps = pd.DataFrame(
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    )
    steps["kind"] = steps["step"].str.split().str[0]
    per_kind = steps.groupby("kind")["seconds"].agg(["count", "sum"])
    lines = [
        f"`make study` has spent **{steps['seconds'].sum() / 3600:.2f} h** of wall time over "
        f"{len(steps)} steps (`study/times.jsonl`, every session summed):",
        "",
    ]
    rows = [
        [kind, str(int(row["count"])), f"{row['sum'] / 3600:.2f}"]
        for kind, row in per_kind.iterrows()
    ]
    return [*lines, *markdown.table(["step kind", "steps", "hours"], rows)]


def bench_section(results: Path) -> list[str]:
    """``bench/README.md`` (written by ``make bench``) without its title, its headings one level
    down."""
    path = results / "bench" / "README.md"
    if not path.is_file():
        return ["No benchmarks yet (`make bench`)."]
    lines = path.read_text().splitlines()
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    return [f"#{line}" if line.startswith("#") else line for line in body]


# ---------------------------------------------------------------------------------------------
# figures
def figures_section(results: Path) -> list[str]:
    pngs = first_seed_only(sorted((results / "figures").rglob("*.png")))
    if not pngs:
        return ["No figures yet (`make analysis` draws them)."]
    lines = [
        "Per-run figures are shown for the first seed; those of the other seeds are in "
        "`figures/` beside them.",
        "",
    ]
    for png in pngs:
        rel = png.relative_to(results)
        caption = " / ".join(rel.with_suffix("").parts[1:]).replace("_", " ")
        lines += [f"**{caption}**", "", f"![{caption}]({rel.as_posix()})", ""]
    return lines


def missing_section(records: pd.DataFrame, missing: list[str]) -> list[str]:
    ours = records[~records["method"].isin(REFERENCES)] if not records.empty else records
    # a stage with floor records only is still missing
    stages = set(ours["stage"]) if not ours.empty else set()
    needed = [
        s for s in ("classification", "detection", "segmentation") if s not in stages
    ] + missing
    if not needed:
        return ["Nothing: every stage has records and every analysis has inputs."]
    return [
        f"- {name}: none yet; run `{MAKERS.get(name, 'make all')}`."
        for name in dict.fromkeys(needed)
    ]


# ----------------------------------------------------------------------------------------------
# report
#: The subspace sweeps of the study, whose every variant the report compares against the VICReg
#: method runs: ``combine``, AND variants at pair compute; ``augself``, AugSelf predicting what the
#: subspace targets predict (their control); ``conflict``, under hue jitter over the whole colour
#: circle.
SUBSPACE_SWEEPS = ("combine", "augself", "conflict")


def _same_objectives(name: str, control: str) -> tuple[str, str, str]:
    """A subspace-target row against AugSelf predicting what its subspaces predict."""
    return (
        name,
        control,
        f"`{name}`: the subspace target against AugSelf predicting the same differences from the "
        "backbone at the same weight",
    )


def subspace_controls(names: list[str]) -> list[tuple[str, str, str]]:
    """(row, its control, what the difference measures) for the subspace rows there are: a learned
    assignment against the fixed one of the same variant, a target against none, and a subspace
    target against AugSelf (the same objective from the backbone, no subspaces)."""
    pairs = []
    for name in names:
        if name.startswith("conflict/and_target"):  # the same under hue jitter over the circle
            suffix = name.removeprefix("conflict/and_target")
            same = f"conflict/augself_target_objectives{suffix}"
            if same in names:
                pairs.append(_same_objectives(name, same))
        if not name.startswith("combine/") or "fixed" in name:
            continue
        variant = name.removeprefix("combine/")
        fixed = f"combine/{variant.replace('and', 'and_fixed', 1)}"
        if fixed in names:
            pairs.append((name, fixed, f"`{name}`: learned assignment against a fixed random one"))
        width = re.search(r"_h(\d+)$", variant)
        base = f"combine/{variant[: width.start()]}" if width else None
        if base in names:  # the target heads at another width (loss.target_hidden)
            pairs.append(
                (
                    name,
                    base,
                    f"`{name}`: target heads {width.group(1)} wide against AugSelf's 512 "
                    f"(`{base}`)",
                )
            )
        if width:  # and against every wider one of the same variant
            for other in names:
                wider = re.fullmatch(re.escape(f"{base}_h") + r"(\d+)", other)
                if wider and int(wider.group(1)) > int(width.group(1)):
                    pairs.append(
                        (
                            name,
                            other,
                            f"`{name}`: target heads {width.group(1)} wide against "
                            f"{wider.group(1)} (`{other}`)",
                        )
                    )
        if "target" in variant:
            if "combine/and" in names:
                pairs.append((name, "combine/and", f"`{name}`: the subspace target against none"))
            same = f"augself/target_objectives{variant.removeprefix('and_target')}"
            if same in names:
                pairs.append(_same_objectives(name, same))
            if "augself" in names:
                pairs.append(
                    (
                        name,
                        "augself",
                        f"`{name}`: the subspace target against AugSelf (its objective from the "
                        "backbone, no subspaces)",
                    )
                )
    return pairs


def _per_run_scores(results: Path) -> pd.DataFrame:
    """One row per run folder: the nine factor tasks, their mean and the content / variant-factor
    means."""
    records = read_records(
        [
            results / "records" / f
            for f in sweeps.RECORD_FILES
            if (results / "records" / f).is_file()
        ]
    )
    probes = (
        sweeps.probe_results(records)
        if not records.empty
        else pd.DataFrame(columns=["folder", "task", "value"])
    )
    if probes.empty:
        return pd.DataFrame()
    table = sweeps.per_run_scores(probes)
    table["mean"] = table[list(sweeps.TASKS)].mean(axis=1)
    for group, tasks in sweeps.GROUPS.items():
        table[group] = table[list(tasks)].mean(axis=1)
    return table


def _subspace_groups(results: Path) -> tuple[dict[str, pd.DataFrame], str | None]:
    """Per-run scores of the VICReg and AugSelf method runs and of every subspace sweep row;
    (groups, why not) with an empty dict and the reason when there is nothing to check."""
    try:
        index = sweeps.load_index(results)
    except FileNotFoundError:
        return {}, "Not checked: no study index."
    scores = _per_run_scores(results)
    methods = index.get("methods", [])
    vicreg_name = next((m for m in methods if m.startswith("vicreg")), None)
    if scores.empty or vicreg_name is None:
        return {}, "Not checked: no VICReg method runs or no factor-task records."

    def rows_of(folders: list[str]) -> pd.DataFrame:
        return scores[
            [
                any(sweeps._same_folder(PurePath(i), PurePath(f)) for f in folders)
                for i in scores.index
            ]
        ]

    def method_rows(name: str) -> pd.DataFrame:
        return scores[[PurePath(i).name.startswith(f"{name}_s") for i in scores.index]]

    groups = {"vicreg": method_rows(vicreg_name)}
    augself_name = next((m for m in methods if m.startswith("augself_")), None)
    if augself_name is not None:
        groups["augself"] = method_rows(augself_name)
    for sweep in SUBSPACE_SWEEPS:
        for variant, spec in index.get("sweeps", {}).get(sweep, {}).items():
            groups[f"{sweep}/{variant}"] = rows_of(spec["runs"])
    groups = {k: v for k, v in groups.items() if len(v)}
    if "vicreg" not in groups or not any(k.startswith(("combine/", "conflict/")) for k in groups):
        return (
            {},
            "Not checked: the combine / conflict sweeps have no probed runs yet (`make study`).",
        )
    return groups, None


def _difference(frame: pd.DataFrame, other: pd.DataFrame, column: str) -> tuple[float, bool]:
    """Mean difference and whether it exceeds two standard errors over seeds."""
    d = frame[column].mean() - other[column].mean()
    se = (frame[column].var() / len(frame) + other[column].var() / len(other)) ** 0.5
    return d, bool(len(frame) > 1 and len(other) > 1 and abs(d) > 2 * se)


def _within(clear: bool) -> str:
    return " (beyond two standard errors)" if clear else " (within two standard errors)"


def claim_subspaces(results: Path) -> list[str]:
    """The checks on the subspace sweeps: every AND variant against VICReg on the nine-task mean,
    the best of them against the criterion (+1 beyond two standard errors), each against its
    control, and under hue jitter over the whole colour circle, each AND variant against both
    VICReg configs on hue and shape."""
    groups, why_not = _subspace_groups(results)
    if why_not:
        return [why_not]
    columns = ["mean", "content", "variant factors", "hue", "shape"]
    reference = groups["vicreg"]

    def cell(frame: pd.DataFrame, column: str) -> str:
        values = frame[column]
        return tables.format_cell(values.mean(), values.std(), len(values), count=False)

    lines = [
        "Linear-probe top-1 (%), mean ± sample std over seeds (n); `content`: shape, size, pos; "
        "`variant factors`: hue, chiral, texture, light. Differences to `vicreg` (the method "
        "runs, VICReg's strengths); * beyond two standard errors. `augself`: the AugSelf method "
        "runs (VICReg plus its crop and colour heads on the backbone).",
        "",
    ]
    rows = []
    for name, frame in groups.items():
        d, clear = _difference(frame, reference, "mean")
        delta = "" if name == "vicreg" else f"{d:+.1f}{'*' if clear else ''}"
        rows.append([f"`{name}`", str(len(frame)), *(cell(frame, c) for c in columns), delta])
    lines += markdown.table(["run", "n", *columns, "mean − vicreg"], rows)
    lines.append("")
    combined = {k: v for k, v in groups.items() if k.startswith("combine/")}
    if combined:
        best = max(combined, key=lambda k: combined[k]["mean"].mean())
        d, clear = _difference(combined[best], reference, "mean")
        met = d >= 1.0 and clear
        lines.append(
            f"- The best MAST configuration on VICReg's pairs, `{best}`, against VICReg at equal "
            f"steps: {d:+.1f} points on the nine-task mean{_within(clear)}; the criterion (at "
            f"least +1, beyond two standard errors) is **{'met' if met else 'not met'}**."
        )
    for row, control, text in subspace_controls(list(groups)):
        d, clear = _difference(groups[row], groups[control], "mean")
        lines.append(f"- {text}: {d:+.1f} points{_within(clear)}.")
    rivals = {"vicreg": reference, "conflict/vicreg_hue05": groups.get("conflict/vicreg_hue05")}
    for name, mine in groups.items():
        if not name.startswith("conflict/") or name == "conflict/vicreg_hue05":
            continue
        parts, beats = [], True
        for rival, frame in rivals.items():
            if frame is None or not len(frame):
                beats = False
                continue
            for task in ("hue", "shape"):
                d, clear = _difference(mine, frame, task)
                beats &= d > 0 and clear
                parts.append(f"{task} {d:+.1f}{'*' if clear else ''} vs `{rival}`")
        lines.append(
            f"- Hue jitter over the whole circle (`augment.hue=0.5`): `{name}` against both "
            f"VICReg configs: {', '.join(parts)}; it beats both on hue and shape together (beyond "
            f"two standard errors): **{'yes' if beats else 'no'}**."
        )
    return lines


def build_report(results: Path, runs_dir: Path, runs: pd.DataFrame | None = None) -> str:
    """The report's text; ``runs``: the pretraining runs table when the caller has it already."""
    records = tables.load_results(results / "records")
    measured = tables.measurements(records) if not records.empty else pd.DataFrame()
    aggregated = tables.aggregate(records) if not records.empty else pd.DataFrame()
    claim1, miss1 = claim_invariances(measured)
    summary = summary_section(
        measured, aggregated, "below", pretrain_seconds(results), pretrain_cpus(results)
    )
    claim2, miss2 = claim_masks(results / "figures")
    claim3, miss3 = claim_uncertainty(results / "figures")
    runs = pretraining_runs(runs_dir, results) if runs is None else runs
    lines = [
        "# Results",
        "",
        "Generated by `python -m analysis report` (`make analysis`) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit `{git_commit()[:7]}` "
        f"from {len(records)} records in `records/`; do not edit by hand. Every number traces "
        "back to a record (config, seed, commit) or a run's log.",
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## What was run",
        "",
        "Pretraining runs:",
        "",
        *runs_section(runs, runs_dir),
        "",
        "Records:",
        "",
        *records_section(records),
        *diverged_section(records),
        "",
        f"Software: {software()}.",
        "",
        "## Tables",
        "",
        "Cells: mean ± sample std over seeds (n = seeds); **bold**: best of our rows per column "
        "(the supervised ceiling and published rows are references, never marked).",
        "",
        *tables_section(aggregated, records),
        "## Real data: Fashion-MNIST",
        "",
        *real_data_section(measured),
        "",
        "## The paper's claims, checked on these results",
        "",
        "### 1. MAST helps tasks that need different invariances",
        "",
        *claim1,
        "",
        "### 2. The masks reveal how augmentations relate",
        "",
        *claim2,
        "",
        "### 3. Uncertainty tracks difficulty",
        "",
        *claim3,
        "",
        "### 4. Subspaces combined with AND",
        "",
        *claim_subspaces(results),
        "",
        "## Sensitivity sweeps",
        "",
        *sweeps_section(results),
        "",
        "## Training diagnostics",
        "",
        *diagnostics_section(results),
        "",
        "## Study time",
        "",
        *study_time_section(results),
        "",
        "## Benchmarks",
        "",
        *bench_section(results),
        "",
        "## Figures",
        "",
        *figures_section(results),
        "## Missing",
        "",
        *missing_section(records, miss1 + miss2 + miss3),
        "",
    ]
    return "\n".join(lines)


README_BEGIN = (
    "<!-- results summary: written by `make analysis` from results/; do not edit by hand -->"
)
README_END = "<!-- end of results summary -->"


TIMINGS_BEGIN = (
    "<!-- timings: written by `make analysis` from measured logs; do not edit by hand -->"
)
TIMINGS_END = "<!-- end of timings -->"


def has_block(text: str, begin: str, end: str) -> bool:
    """Whether ``text`` holds the markers ``begin`` and ``end`` once each, in that order."""
    return (text.count(begin), text.count(end)) == (1, 1) and text.index(begin) < text.index(end)


def replace_block(text: str, begin: str, end: str, lines: list[str]) -> str:
    """``text`` with the lines between its ``begin`` and ``end`` markers (``has_block``)
    replaced."""
    head, rest = text.split(begin)
    return head + "\n".join([begin, "", *lines, "", end]) + rest.split(end, 1)[1]


def readme_summary(results: Path) -> list[str]:
    """The README's results summary: the method table, the comparisons with VICReg, the verdict."""
    records = tables.load_results(results / "records")
    measured = tables.measurements(records) if not records.empty else pd.DataFrame()
    aggregated = tables.aggregate(records) if not records.empty else pd.DataFrame()
    claim1, _ = claim_invariances(measured)
    comparisons = [line for line in claim1 if line.startswith("- ")]
    verdict = [line for line in claim1 if line.startswith("On these results")]
    summary = summary_section(
        measured, aggregated, seconds=pretrain_seconds(results), cpus=pretrain_cpus(results)
    )
    return [*summary, "", *comparisons, "", *verdict]


def update_readme(readme: Path, results: Path) -> Path | None:
    """Rewrite the blocks between the README's markers: the results summary and the timing table
    (``analysis.timings``); ``None`` (nothing written) when the file or every marker pair is
    absent."""
    if not readme.is_file():
        return None
    text, found = readme.read_text(), False
    for begin, end, build in (
        (README_BEGIN, README_END, readme_summary),
        (TIMINGS_BEGIN, TIMINGS_END, timing_lines),
    ):
        if has_block(text, begin, end):
            text, found = replace_block(text, begin, end, build(results)), True
    return atomic_write_text(readme, text) if found else None


def run(args: argparse.Namespace) -> list[Path]:
    # The runs table is saved before the report is written, so its rows outlive the run folders.
    runs = pretraining_runs(args.runs, args.results)
    written = [
        atomic_write_text(args.results / RUNS_CSV, runs.to_csv(index=False)),
        atomic_write_text(args.results / "README.md", build_report(args.results, args.runs, runs)),
    ]
    readme = update_readme(args.readme or args.results.resolve().parent / "README.md", args.results)
    return written + ([readme] if readme else [])
