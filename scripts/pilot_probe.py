"""Probe the pilot checkpoints of scripts/pilot_pretrain.sh (and random-init floors) on
FactorShapes.

For every finished run under results/runs/pilot/ and a random-init backbone per seed: linear-lbfgs
on the 8 labels of cls-upright and on orient of cls-rot (and knn, k=20, T=0.07, recorded too), plus
the mean per-dimension std of the final embedding (backbone + expander, on 1,024 unaugmented
pretrain images). Writes one record per number to results/records/pilot.jsonl and the mean +/- std
table to results/pilot/README.md.

  python -m scripts.pilot_probe [--runs results/runs/pilot] [--out results]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from analysis.tables import format_cell
from core import markdown
from core.checkpoints import load_checkpoint, load_suite_backbone
from core.config import DataConfig
from core.data import build_dataset
from core.data.factorshapes import FACTOR_TASKS, FACTORS
from core.data.transforms import to_float
from core.io import atomic_write_text
from core.model import build_expander
from core.records import append_record, checkpoint_ref, make_record, read_records
from downstream.classification.features import extract
from downstream.classification.knn import knn_accuracy
from downstream.classification.linear import linear_probe

TASK_ORDER = ["shape", "hue", "orient", "chiral", "texture", "size", "pos", "bg", "light"]


def features_for(backbone, split: str, object_scale: float = 1.0) -> dict[str, tuple]:
    parts = {}
    for part in ("train", "val", "test"):
        data = build_dataset(
            DataConfig(split=split, image_size=64, object_scale=object_scale),
            part=part,
            progress=False,
        )
        parts[part] = extract(backbone, data, desc=f"{split}/{part}")
    return parts


@torch.no_grad()
def embedding_std(path: Path) -> float:
    state = load_checkpoint(path)
    backbone = load_suite_backbone(str(path))
    cfg = state["config"]["model"]
    expander = build_expander(backbone.feature_dim, cfg["expander"])
    expander.load_state_dict(state["expander"])
    scale = cfg_scale(state["config"])
    images = build_dataset(
        DataConfig(split="pretrain", image_size=64, object_scale=scale),
        part="train",
        progress=False,
    )
    batch = torch.stack([images[i][0] for i in range(1024)])
    z = expander.eval()(backbone(to_float(batch)))
    return z.std(0).mean().item()


def cfg_scale(config: dict) -> float:
    return float(config.get("data", {}).get("object_scale", 1.0))


def floor_label(object_scale: float) -> str:
    return "random-init" if object_scale == 1.0 else f"random-init_scale{object_scale:g}"


def probe(
    backbone,
    label: str,
    seed: int,
    ckpt: Path | None,
    out: Path,
    epochs: int | None,
    object_scale: float = 1.0,
) -> None:
    by_split = {
        split: features_for(backbone, split, object_scale) for split in ("cls-upright", "cls-rot")
    }
    for split, task in FACTOR_TASKS:
        parts = by_split[split]
        result = linear_probe(
            *((parts[p][0], parts[p][1][task]) for p in ("train", "val", "test")), FACTORS[task]
        )
        append_record(
            out / "records" / "pilot.jsonl",
            make_record(
                stage="pilot-probe",
                method=label,
                arch="resnet18w16",
                pretrain_ckpt=checkpoint_ref(ckpt),
                pretrain_epochs=epochs,
                dataset=f"factorshapes/{split}",
                task=task,
                protocol="linear-lbfgs",
                seed=seed,
                metric="top1",
                value=100 * result.accuracy,
                n_train=len(parts["train"][0]) + len(parts["val"][0]),
                n_test=len(parts["test"][0]),
                config={"l2": result.l2, "object_scale": object_scale},
            ),
        )
        knn = knn_accuracy(
            (parts["train"][0], parts["train"][1][task]),
            (parts["test"][0], parts["test"][1][task]),
            FACTORS[task],
        )
        append_record(
            out / "records" / "pilot.jsonl",
            make_record(
                stage="pilot-probe",
                method=label,
                arch="resnet18w16",
                pretrain_ckpt=checkpoint_ref(ckpt),
                pretrain_epochs=epochs,
                dataset=f"factorshapes/{split}",
                task=task,
                protocol="knn",
                seed=seed,
                metric="top1",
                value=100 * knn,
                n_train=len(parts["train"][0]),
                n_test=len(parts["test"][0]),
                config={"k": 20, "temperature": 0.07, "object_scale": object_scale},
            ),
        )
        print(f"{label} s{seed} {task}: linear {100 * result.accuracy:.1f}, knn {100 * knn:.1f}")
    if ckpt is not None:
        append_record(
            out / "records" / "pilot.jsonl",
            make_record(
                stage="pilot-probe",
                method=label,
                arch="resnet18w16",
                pretrain_ckpt=checkpoint_ref(ckpt),
                pretrain_epochs=epochs,
                dataset="factorshapes/pretrain",
                task="embedding",
                protocol="embedding-std",
                seed=seed,
                metric="mean_std",
                value=embedding_std(ckpt),
            ),
        )


def table(out: Path) -> str:
    frame = read_records(out / "records" / "pilot.jsonl")
    top1 = frame[(frame.metric == "top1") & (frame.protocol == "linear-lbfgs")]
    stats = top1.groupby(["method", "task"]).value.agg(["mean", "std", "count"])
    methods = [
        "random-init",
        "vicreg",
        "vicreg_nojitter",
        "vicreg_noblur",
        "mast",
        "vicreg_b64",
        "mast_b64",
        "vicreg_hue05",
        "random-init_scale1.25",
        "vicreg_scale125",
        "vicreg_noblur_scale125",
    ]
    emb = frame[frame.metric == "mean_std"].groupby("method").value.agg(["mean", "std"])
    rows = []
    for method in [m for m in methods if m in stats.index.get_level_values(0)]:
        cells = [
            format_cell(row["mean"], row["std"], int(row["count"]))
            for row in (stats.loc[(method, task)] for task in TASK_ORDER)
        ]
        e = f"{emb.loc[method, 'mean']:.2f}" if method in emb.index else "-"
        rows.append([method, *cells, e])
    return "\n".join(markdown.table(["method", *TASK_ORDER, "embedding std"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.pilot_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=Path, default=Path("results/runs/pilot"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    records = args.out / "records" / "pilot.jsonl"
    done = set()
    if records.exists():
        frame = read_records(records)
        done = {(m, s) for m, s in zip(frame.method, frame.seed)}
    if not args.table_only:
        runs = sorted(args.runs.glob("*_s*/done"))
        scales = {1.0} | {
            cfg_scale(load_checkpoint(run.parent / "last.pt")["config"]) for run in runs
        }
        for scale in sorted(scales):  # a random-init floor on every data variant a run used
            for seed in (0, 1, 2):
                if (floor_label(scale), seed) not in done:
                    probe(
                        load_suite_backbone(None, "resnet18", 16, seed),
                        floor_label(scale),
                        seed,
                        None,
                        args.out,
                        None,
                        scale,
                    )
        for run in runs:
            name, seed = re.fullmatch(r"(.+)_s(\d+)", run.parent.name).groups()
            if (name, int(seed)) in done:
                continue
            ckpt = run.parent / "last.pt"
            state = load_checkpoint(ckpt)
            probe(
                load_suite_backbone(str(ckpt)),
                name,
                int(seed),
                ckpt,
                args.out,
                state["epoch"],
                cfg_scale(state["config"]),
            )
    text = (
        "# Pilot: embedded default budget, linear-lbfgs top-1 (%) on FactorShapes\n\nGenerated by "
        "`python -m scripts.pilot_probe` from `results/records/pilot.jsonl`; mean ± std over "
        "seeds. Labels of cls-upright except orient (cls-rot). Embedding std: mean per-dimension "
        "std of the expander output on 1,024 unaugmented pretrain images.\n\n"
        + table(args.out)
        + "\n"
    )
    atomic_write_text(args.out / "pilot" / "README.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
