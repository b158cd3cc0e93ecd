"""Result tables: records in, one table per family (stage · dataset · protocol) out, as Markdown,
CSV and LaTeX.

  python -m analysis tables [--records results/records] [--out results/tables]

A cell is ``mean ± std (n=k)`` over seeds (sample std; no std for n=1). A rerun of the same
checkpoint, task, protocol, metric and seed replaces the older record (latest ``time`` wins), so
reruns never double-count; a checkpoint retrained into the same path drops the records of its old
weights (``_current_checkpoints``). Rows: our methods, then the random-init floor, then the
supervised ceiling, then published numbers (``analysis/published.csv``, always labelled
"published"). The best mean per column among our rows is bold; the ceiling and published rows are
references, never candidates. ``pilot.jsonl`` (the pretraining pilot) is not a result and is left
out, and so is ``sweeps.jsonl`` (the study's sweeps: ``python -m analysis sweeps``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path, PurePath

import pandas as pd

from core import markdown
from core.io import atomic_write_text
from core.records import ckpt_field, floor_init, read_records

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
# The pretraining pilot's probes are not results; the study's sweeps get their own tables
# (analysis.sweeps).
EXCLUDED_FILES = {"pilot.jsonl", "sweeps.jsonl"}
FLOOR, CEILING = "random-init", "supervised"
#: The raw-pixel reference (``--pixels``): a floor too, one a learned representation should beat.
PIXELS = "pixels"
ROLE_ORDER = {"ours": 0, "floor": 1, "ceiling": 2, "published": 3}
# the ceiling and published rows are references, not competitors
BEST_CANDIDATES = (
    "ours",
    "floor",
)
SEP = " · "
STAGES = {"classification", "detection", "segmentation"}  # record stages whose families get tables

GROUP_KEYS = [
    "family",
    "stage",
    "dataset",
    "protocol",
    "role",
    "method",
    "label",
    "arch",
    "pretrain_epochs",
    "task",
    "metric",
]
ROW_KEYS = ["label", "role", "arch", "pretrain_epochs"]
META_COLUMNS = ["method", "role", "arch", "epochs"]
# What identifies one measurement; a later record with the same key is a rerun and replaces the
# earlier one.
DEDUP_KEYS = [
    "stage",
    "dataset",
    "protocol",
    "method",
    "arch",
    "checkpoint",
    "task",
    "metric",
    "seed",
]
# Checkpoint file names that say nothing about the run, so the folder name is used instead.
GENERIC_STEM = re.compile(
    r"^(last|best|final|latest|checkpoint|ckpt|model|backbone)$|^(epoch|ep|step)[_-]?\d+$"
)
SEED_SUFFIX = re.compile(r"[_-]s(eed)?\d+$")
PUBLISHED_LEGEND = (
    "Numbers from the literature (analysis/published.csv, listed in docs/protocols.md), "
    "each under its own paper's protocol; none of them is ours."
)
LEGEND = (
    "Cells: mean ± sample std over seeds (n = number of seeds; no std for n=1). **Bold**: best "
    "mean per column among our rows (floor included; the supervised ceiling and published rows "
    "are references and never marked). Published rows are numbers from the literature, not ours."
)


# ---------------------------------------------------------------- reading and aggregating

GONE_MARK = " †"  # appended to a kept row's run name: its folder is not here any more


def keep_gone_runs(table: pd.DataFrame, previous: Path, runs_dir: Path) -> pd.DataFrame:
    """``table`` plus the rows of the earlier ``previous`` CSV whose run folder is gone from
    ``runs_dir``.

    Run folders (checkpoints, logs) are not committed, so a fresh checkout has none; the per-run
    tables that the results were written from keep those runs' rows, their names marked with
    ``GONE_MARK``.
    """
    if not previous.is_file():
        return table
    earlier = pd.read_csv(previous)
    if "run" not in earlier.columns:
        return table
    names = earlier["run"].astype(str).str.removesuffix(GONE_MARK)
    here = names.map(lambda n: (runs_dir / n).is_dir()).astype(bool)
    gone = ~names.isin(set(table["run"].astype(str))) & ~here
    kept = earlier[gone].assign(run=names[gone] + GONE_MARK)
    return (
        pd.concat([table, kept], ignore_index=True).sort_values("run", ignore_index=True)
        if len(kept)
        else table
    )


def load_results(records_dir: str | Path = "results/records") -> pd.DataFrame:
    """Every ``*.jsonl`` of ``records_dir`` except the pilot, as one DataFrame (empty when there are
    none)."""
    files = [p for p in sorted(Path(records_dir).glob("*.jsonl")) if p.name not in EXCLUDED_FILES]
    return read_records(files)  # no files (or no folder): an empty frame with the schema's columns


def _checkpoint_id(ckpt) -> str:
    """The path first: a checkpoint re-trained into the same run folder replaces the old one (its
    records too)."""
    return ckpt_field(ckpt, "path") or ckpt_field(ckpt, "sha256") or ""


def config_name(ckpt, arch) -> str:
    """A short name for the pretraining config behind a checkpoint: its run folder, seed suffix
    removed."""
    path = ckpt_field(ckpt, "path")
    if not path:
        sha = ckpt_field(ckpt, "sha256")
        return sha[:8] if sha else str(arch or "no checkpoint")
    path = PurePath(path)
    name = path.parent.name if GENERIC_STEM.match(path.stem) and path.parent.name else path.stem
    return SEED_SUFFIX.sub("", name)


def _current_checkpoints(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the records of a checkpoint that was since retrained into the same path: the newest
    record naming a path gives its current sha256, and a record of that path with another sha256
    measured a file that is gone (e.g. detection of the old weights when only the probes were
    rerun). Such a cell reads "not run yet" until its stage is rerun, instead of mixing weights."""
    path = frame["pretrain_ckpt"].map(lambda c: ckpt_field(c, "path"))
    sha = frame["pretrain_ckpt"].map(lambda c: ckpt_field(c, "sha256"))
    known = path.notna() & sha.notna()
    if not bool(known.any()):
        return frame
    when = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
    order = when[known].sort_values(kind="stable", na_position="first").index
    current = sha[order].groupby(path[order]).last()
    stale = known & (sha != path.map(current))
    return frame[~stale]


def _current_floors(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop random-init records of an older floor definition (no ``config.init``) from every family
    (stage, data set, protocol) that has floors of the current one: the two are different networks,
    and a seed that failed under the new one must not fall back to the old number."""
    init = frame["config"].map(floor_init)
    floor, has = frame["method"] == FLOOR, init.notna()  # map turns a missing init into NaN
    family = pd.MultiIndex.from_frame(frame[["stage", "dataset", "protocol"]])
    old = floor & ~has & family.isin(family[(floor & has).to_numpy()])
    return frame[~old]


def _current_ceilings(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop records of per-label ceiling networks from every family (stage, data set, protocol)
    that has records of a joint one (one network per image part, a head per task; its
    ``supervised`` records name the tasks in ``config.tasks``): the two are different references,
    and a task the joint network lacks must not fall back to the old number."""
    ceiling = frame["method"] == CEILING
    if not bool(ceiling.any()):
        return frame
    path = frame["pretrain_ckpt"].map(lambda c: ckpt_field(c, "path"))
    names_tasks = frame["config"].map(lambda c: isinstance(c, dict) and "tasks" in c)
    joint_paths = set(path[ceiling & names_tasks & (frame["protocol"] == CEILING)].dropna())
    joint = ceiling & path.isin(joint_paths)
    family = pd.MultiIndex.from_frame(frame[["stage", "dataset", "protocol"]])
    old = ceiling & ~joint & family.isin(family[joint.to_numpy()])
    return frame[~old]


def _latest_only(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop reruns: per DEDUP_KEYS keep the latest record by time (file order breaks ties), in file
    order."""
    when = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
    order = when.sort_values(kind="stable", na_position="first").index
    latest = frame.loc[order].drop_duplicates(DEDUP_KEYS, keep="last")
    return latest.sort_index()


def _labels(frame: pd.DataFrame) -> pd.Series:
    """Method name, plus the config name for methods with several configs in one cell (so rows stay
    apart). Decided per data set (``factorshapes/...`` counts as one), so that a method keeps one
    label across the families the report compares, and a second config on other data (a longer
    Fashion-MNIST run) does not rename its rows here."""
    frame = frame.assign(_data=frame["dataset"].astype(str).str.split("/").str[0])
    cell = ["_data", "stage", "dataset", "protocol", "task", "metric", "method"]
    configs = frame.groupby(cell, dropna=False)["config_name"].nunique()
    ambiguous = set(
        zip(*(configs[configs > 1].index.get_level_values(k) for k in ("_data", "method")))
    )
    return frame.apply(
        lambda r: f"{r.method} ({r.config_name})" if (r._data, r.method) in ambiguous else r.method,
        axis=1,
    )


def _role(method: str) -> str:
    return {FLOOR: "floor", PIXELS: "floor", CEILING: "ceiling"}.get(method, "ours")


def family_name(stage: str, dataset: str, protocol: str) -> str:
    return SEP.join((stage, dataset, protocol))


def measurements(records: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement: reruns dropped, null values dropped, with ``checkpoint``, ``label``,
    ``role`` and ``family`` columns (what ``aggregate`` groups; per-seed analyses read it
    directly)."""
    frame = _current_ceilings(_current_floors(_current_checkpoints(records.copy())))
    frame["checkpoint"] = frame["pretrain_ckpt"].map(_checkpoint_id)
    # Deduplicate before dropping null values: a diverged rerun (null) hides the older number, never
    # revives it.
    frame = _latest_only(frame)
    frame = frame[frame["value"].notna()].copy()
    if frame.empty:
        return frame.assign(config_name=[], label=[], role=[], family=[])
    frame["config_name"] = [
        config_name(c, a) for c, a in zip(frame["pretrain_ckpt"], frame["arch"])
    ]
    frame["label"] = _labels(frame)
    frame["role"] = frame["method"].map(_role)
    frame["family"] = [
        family_name(*k) for k in zip(frame["stage"], frame["dataset"], frame["protocol"])
    ]
    return frame


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count per (family, method label, arch, epochs, task, metric),
    reruns counted once.

    ``n`` counts the distinct (checkpoint, seed) measurements left after deduplication, so three
    pretraining seeds of one config (one checkpoint each) evaluated with seed 0 count as n=3.
    """
    frame = measurements(records)
    if frame.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["mean", "std", "n"])
    grouped = frame.groupby(GROUP_KEYS, dropna=False, sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="size").reset_index()


def families(records: pd.DataFrame) -> list[str]:
    """The table families ("stage · dataset · protocol") of raw or aggregated records, sorted."""
    keys = records[["stage", "dataset", "protocol"]].drop_duplicates()
    return sorted(family_name(*k) for k in keys.itertuples(index=False))


# ---------------------------------------------------------------- published numbers


def load_published(path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The published reference numbers, each with a row label that says "published" and where it
    comes from."""
    table = pd.read_csv(path, dtype={"task": str, "datasets": str, "value": str})
    table["shown"] = table["value"]  # as printed in the source (keeps "79.40", "64.0")
    table["value"] = table["value"].astype(float)
    table["label"] = [f"{m} (published, {c})" for m, c in zip(table["method"], table["cite"])]
    return table


def _dataset_key(name: str) -> str:
    """Compare data set names loosely: ``folder:ImageNet-1k`` and ``imagenet1k`` are the same."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower().removeprefix("folder:"))


def _matching_published(
    published: pd.DataFrame, stage: str, dataset: str, protocol: str
) -> pd.DataFrame:
    same = (published["stage"] == stage) & (published["protocol"] == protocol)
    names = published["datasets"].map(lambda s: {_dataset_key(n) for n in str(s).split("|")})
    return published[same & names.map(lambda keys: _dataset_key(dataset) in keys)]


def _published_long(published: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Published rows of ``ours``' family in the aggregate's long form; task "*" fills a family with
    one task."""
    stage, dataset, protocol, family = ours.iloc[0][["stage", "dataset", "protocol", "family"]]
    rows = []
    for pub in _matching_published(published, stage, dataset, protocol).itertuples():
        tasks = ours.loc[ours["metric"] == pub.metric, "task"].unique()
        task = tasks[0] if pub.task == "*" and len(tasks) == 1 else pub.task
        if task not in set(tasks):
            continue  # no column of ours to compare with
        rows.append(
            dict(
                family=family,
                stage=stage,
                dataset=dataset,
                protocol=protocol,
                role="published",
                method=pub.method,
                label=pub.label,
                arch=pub.arch,
                pretrain_epochs=pub.epochs,
                task=task,
                metric=pub.metric,
                mean=pub.value,
                std=float("nan"),
                n=pd.NA,
                shown=pub.shown,
                source=pub.source,
            )
        )
    return pd.DataFrame(rows)


def family_rows(
    aggregated: pd.DataFrame, family: str, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Long-form rows of one family: ours (from ``aggregated``) followed by the matching published
    numbers.

    ``published`` defaults to ``analysis/published.csv``; pass an empty DataFrame to leave them out.
    """
    ours = aggregated[aggregated["family"] == family]
    published = load_published() if published is None else published
    if ours.empty or published.empty:
        return ours.reset_index(drop=True)
    return pd.concat([ours, _published_long(published, ours)], ignore_index=True)


# ---------------------------------------------------------------- pivoting


def _column_names(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Column label per (task, metric): the task when one metric, the metric when one task, else
    both."""
    if len({m for _, m in keys}) == 1:
        return {k: k[0] for k in keys}
    if len({t for t, _ in keys}) == 1:
        return {k: k[1] for k in keys}
    return {k: f"{k[0]}{SEP}{k[1]}" for k in keys}


def format_cell(
    mean: float, std: float = float("nan"), n: int | None = None, *, count: bool = True
) -> str:
    """``62.0 ± 2.0 (n=3)``: the mean, its spread when there is one (a known std, and n > 1 when
    n is given) and, with ``count``, the number of seeds; ``25.8 (n=1)`` without a spread. The one
    formatter of every "mean ± std" cell the analysis writes."""
    spread = f" ± {std:.1f}" if pd.notna(std) and (n is None or n > 1) else ""
    counted = f" (n={int(n)})" if count and n is not None else ""
    return f"{mean:.1f}{spread}{counted}"


def _epochs_text(epochs) -> str:
    if pd.isna(epochs):
        return ""
    return str(int(epochs)) if float(epochs).is_integer() else str(epochs)


def _row_order(row: dict) -> tuple:
    epochs = row["pretrain_epochs"]
    return (
        ROLE_ORDER[row["role"]],
        str(row["label"]),
        float("inf") if pd.isna(epochs) else float(epochs),
    )


def _rows(long: pd.DataFrame, names: dict) -> list[dict]:
    """One dict per table row: the row keys plus, per column, its mean and its cell text."""
    rows = []
    for key, group in long.groupby(ROW_KEYS, dropna=False, sort=False):
        row = dict(zip(ROW_KEYS, key), method=group["method"].iloc[0], means={}, cells={})
        for cell in group.itertuples():
            column = names[(cell.task, cell.metric)]
            row["means"][column] = cell.mean
            row["cells"][column] = (
                cell.shown if cell.role == "published" else format_cell(cell.mean, cell.std, cell.n)
            )
        rows.append(row)
    return sorted(rows, key=_row_order)


def _best_rows(rows: list[dict], column: str) -> list[int]:
    """Indices of the rows holding the highest mean of ``column`` among candidates (ties all
    marked)."""
    scores = {
        i: r["means"][column]
        for i, r in enumerate(rows)
        if r["role"] in BEST_CANDIDATES and pd.notna(r["means"].get(column))
    }
    top = max(scores.values(), default=None)
    return [i for i, score in scores.items() if score == top]


def pivot(
    aggregated: pd.DataFrame, family: str, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The table of one family: rows = method label (with role, arch, epochs), columns = task or
    metric.

    Cells are text; the best cell per column is wrapped in ``**…**`` (``markdown_table`` keeps it,
    ``latex_table`` turns it into ``\\textbf``). ``attrs["best"]`` maps each column to the bold row
    labels.
    """
    long = family_rows(aggregated, family, published)
    keys = list(dict.fromkeys(zip(long["task"], long["metric"])))
    names = _column_names(keys)
    rows = _rows(long, names)
    columns = list(names.values())
    best = {column: _best_rows(rows, column) for column in columns}
    for column, winners in best.items():
        for i in winners:
            rows[i]["cells"][column] = f"**{rows[i]['cells'][column]}**"
    records = [
        dict(
            method=r["label"],
            role=r["role"],
            arch=r["arch"],
            epochs=_epochs_text(r["pretrain_epochs"]),
            **r["cells"],
        )
        for r in rows
    ]
    table = pd.DataFrame(records, columns=META_COLUMNS + columns).fillna("")
    table.attrs.update(
        family=family,
        caption=_caption(keys),
        best={c: [rows[i]["label"] for i in w] for c, w in best.items()},
    )
    return table


def _caption(keys: list[tuple[str, str]]) -> str:
    metrics = ", ".join(dict.fromkeys(m for _, m in keys))
    tasks = ", ".join(dict.fromkeys(t for t, _ in keys))
    return f"metric: {metrics}; task: {tasks}"


def published_table(published: pd.DataFrame) -> pd.DataFrame:
    """All published reference numbers as one table of their own (none of them is ours)."""
    columns = {
        "label": "method",
        "arch": "arch",
        "epochs": "epochs",
        "datasets": "dataset",
        "protocol": "protocol",
        "metric": "metric",
        "value": "value",
        "source": "source",
        "note": "note",
    }
    table = published[list(columns)].rename(columns=columns)
    table["dataset"] = table["dataset"].str.split("|").str[0]
    table["epochs"] = table["epochs"].map(_epochs_text)
    table["value"] = published["shown"]
    return table.fillna("")


# ---------------------------------------------------------------- rendering


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``table``'s columns (index left out; a missing value
    is an empty cell)."""
    rows = (["" if pd.isna(v) else v for v in row] for row in table.itertuples(index=False))
    return "\n".join(markdown.table(table.columns, rows))


TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "·": r"$\cdot$",
    "—": "---",
    "…": r"\ldots{}",
}


def tex_escape(text) -> str:
    """LaTeX-safe text; ``**bold**`` (the best-cell mark) becomes ``\\textbf{bold}``."""
    escaped = "".join(TEX_ESCAPES.get(ch, ch) for ch in ("" if pd.isna(text) else str(text)))
    return re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", escaped)


def latex_table(table: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{'l' * len(table.columns)}}}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    lines += [
        " & ".join(tex_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)
    ]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- writing


def slugify(family: str) -> str:
    """File stem of a family: ``classification · factorshapes/cls-upright · knn`` ->
    ``classification_factorshapes-cls-upright_knn``."""
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", part).strip("-") for part in family.split(SEP))


def _write_table(
    out_dir: Path,
    stem: str,
    title: str,
    table: pd.DataFrame,
    long: pd.DataFrame,
    legend: str = LEGEND,
) -> list[Path]:
    """``stem``.md (title, caption, table, legend), .csv (long form, numeric) and .tex (same
    table)."""
    caption = table.attrs.get("caption", "")
    text = "\n\n".join(
        part for part in (f"## {title}", caption, markdown_table(table), legend) if part
    )
    latex_caption = f"{title} — {caption}" if caption else title
    return [
        atomic_write_text(out_dir / f"{stem}.md", text + "\n"),
        atomic_write_text(out_dir / f"{stem}.csv", long.to_csv(index=False)),
        atomic_write_text(out_dir / f"{stem}.tex", latex_table(table, latex_caption)),
    ]


def _index(entries: list[tuple[str, str]], n_records: int, records_dir: Path) -> str:
    lines = [
        "# Result tables",
        "",
        f"Built by `python -m analysis tables` from {n_records} records in `{records_dir}` "
        f"({', '.join(sorted(EXCLUDED_FILES))} excluded).",
        "",
    ]
    lines += [
        f"- {title}: [md]({stem}.md) · [csv]({stem}.csv) · [tex]({stem}.tex)"
        for title, stem in entries
    ]
    return "\n".join(lines) + "\n"


def _remove_stale_families(out_dir: Path, keep: set[str], stages: set[str]) -> None:
    """Delete family tables a previous run wrote whose records are gone (e.g. archived), so that the
    folder shows only what the records hold. Tables of other steps (invariance, diagnostics, sweeps)
    are left alone."""
    for path in out_dir.glob("*"):
        family_file = path.suffix in (".md", ".csv", ".tex") and any(
            path.stem.startswith(f"{s}_") for s in stages
        )
        if family_file and path.stem not in keep:
            path.unlink()


#: AugSelf's transfer table, its column order (Lee et al. 2021, Table 2), by loose data set key.
TRANSFER_COLUMNS = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "food101": "Food",
    "food": "Food",
    "mit67": "MIT67",
    "pets": "Pets",
    "flowers": "Flowers",
    "flowers102": "Flowers",
    "caltech101": "Caltech101",
    "cars": "Cars",
    "aircraft": "Aircraft",
    "dtd": "DTD",
    "sun397": "SUN397",
    "cub": "CUB",
    "stl10": "STL10",
}
TRANSFER_LEGEND = (
    "Cells: mean ± sample std over pretraining seeds (n); top-1, or mean per-class accuracy for "
    "Pets, Flowers and Caltech-101 (AugSelf's conventions)."
)
#: The signature of AugSelf's transfer protocol in a record's config (configs/classification/
#: _base/transfer.yaml): 45 L2 weights.
TRANSFER_GRID = 45


def transfer_table(records: pd.DataFrame) -> pd.DataFrame:
    """The paper-style transfer table: one row per pretrained config, one column per data set
    evaluated by AugSelf's protocol (``transfer_<data>.yaml``), cells ``mean ± std (n=k)`` of its
    metric (top-1, or mean per-class accuracy); empty when there are no such records."""
    frame = measurements(records) if not records.empty else records
    if frame.empty:
        return pd.DataFrame()
    grid = frame["config"].map(lambda c: len(c.get("l2_grid", [])) if isinstance(c, dict) else 0)
    frame = frame[(frame["protocol"] == "linear-lbfgs") & (grid == TRANSFER_GRID)].copy()
    if frame.empty:
        return pd.DataFrame()
    key = frame["dataset"].map(_dataset_key)
    frame["column"] = key.map(TRANSFER_COLUMNS).fillna(frame["dataset"])
    cells = frame.groupby(["label", "column"])["value"].agg(["mean", "std", "size"])
    table = (
        cells.apply(lambda r: format_cell(r["mean"], r["std"], r["size"]), axis=1)
        .unstack("column")
        .fillna("–")
    )
    order = list(dict.fromkeys(TRANSFER_COLUMNS.values()))
    columns = [c for c in order if c in table.columns] + sorted(
        c for c in table.columns if c not in order
    )
    return table[columns].rename_axis(index="method", columns=None).reset_index()


def write_tables(
    records_dir: str | Path = "results/records", out_dir: str | Path = "results/tables"
) -> list[Path]:
    """Write every family's table (.md, .csv, .tex) and the published numbers under ``out_dir``,
    plus index.md.

    With no records only index.md is written, saying so. Returns the written paths.
    """
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    records = load_results(records_dir)
    if records.empty:
        text = f"# Result tables\n\nNo records yet in `{records_dir}`: run an evaluation first.\n"
        return [atomic_write_text(out_dir / "index.md", text)]
    aggregated, published = aggregate(records), load_published()
    written, entries = [], []
    for family in families(aggregated):
        stem = slugify(family)
        long = family_rows(aggregated, family, published)
        written += _write_table(out_dir, stem, family, pivot(aggregated, family, published), long)
        entries.append((family, stem))
    _remove_stale_families(out_dir, {stem for _, stem in entries}, STAGES | set(records["stage"]))
    transfer = transfer_table(records)
    if not transfer.empty:
        title = "transfer (AugSelf's linear protocol, 96 px)"
        written += _write_table(out_dir, "transfer", title, transfer, transfer, TRANSFER_LEGEND)
        entries.append((title, "transfer"))
    title = "published reference numbers (from the literature, not ours)"
    written += _write_table(
        out_dir, "published", title, published_table(published), published, PUBLISHED_LEGEND
    )
    entries.append((title, "published"))
    return written + [
        atomic_write_text(out_dir / "index.md", _index(entries, len(records), records_dir))
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--records",
        type=Path,
        default=Path("results/records"),
        help="folder of records *.jsonl (default: %(default)s; pilot.jsonl is left out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/tables"),
        help="output folder (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> list[Path]:
    return write_tables(args.records, args.out)
