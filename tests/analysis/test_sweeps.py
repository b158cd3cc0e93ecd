"""Sweep tables (analysis.sweeps) from a study index and records; the report's claim rows when a
method has several configs."""

import argparse
import json

import pandas as pd
import pytest

from analysis import report, sweeps
from core.records import append_record, make_record


def _probe(results, folder, task, value, file="sweeps.jsonl", dataset="factorshapes/cls-upright"):
    append_record(
        results / "records" / file,
        make_record(
            stage="classification",
            method="mast",
            arch="resnet18w16",
            dataset=dataset,
            task=task,
            protocol="linear-lbfgs",
            seed=0,
            metric="top1",
            value=value,
            pretrain_ckpt={"path": f"{folder}/last.pt", "sha256": folder},
        ),
    )


def _study(results):
    index = {
        "sweeps": {
            "rho": {
                "0.5": {"overrides": [], "runs": ["results/runs/mast_r18w16_b128_16e_shapes_s0"]},
                "0.25": {
                    "overrides": ["loss.rho=0.25"],
                    "runs": ["results/runs/sweeps/rho/0.25_s0"],
                },
                "0.75": {
                    "overrides": ["loss.rho=0.75"],
                    "runs": ["results/runs/sweeps/rho/0.75_s0"],
                },
            }
        }
    }
    (results / "study").mkdir(parents=True)
    (results / "study" / "index.json").write_text(json.dumps(index))
    # an entry from before numerics versions: version 1
    ledger = {
        "results/runs/mast_r18w16_b128_16e_shapes_s0": {"numerics": 2},
        "results/runs/sweeps/rho/0.25_s0": {},
    }
    (results / "study" / "runs.json").write_text(json.dumps(ledger))
    for i, task in enumerate(sweeps.TASKS):
        dataset = "factorshapes/cls-rot" if task == "orient" else "factorshapes/cls-upright"
        _probe(
            results,
            "results/runs/mast_r18w16_b128_16e_shapes_s0",
            task,
            50.0,
            "classification.jsonl",
            dataset,
        )
        _probe(results, "results/runs/sweeps/rho/0.25_s0", task, 50.0 + i, dataset=dataset)
    _probe(results, "results/runs/sweeps/rho/0.25_s0", "hue", 10.0)  # an older record...
    _probe(results, "results/runs/sweeps/rho/0.25_s0", "hue", 61.0)  # ...replaced by the latest
    # orient on cls-upright is not the task
    _probe(results, "results/runs/sweeps/rho/0.25_s0", "orient", 99.0)


def test_sweep_table_rows_means_and_delta(tmp_path):
    _study(tmp_path)
    table = sweeps.sweep_tables(tmp_path)["rho"].set_index("variant")
    assert table.loc["0.5", "mean"] == 50.0 and table.loc["0.5", "overrides"] == "(base config)"
    expected = [50.0 + i for i in range(9)]
    expected[1] = 61.0  # hue: the latest record
    assert table.loc["0.25", "hue"] == 61.0 and table.loc["0.25", "orient"] == 52.0
    assert abs(table.loc["0.25", "mean"] - sum(expected) / 9) < 1e-9
    by_task = dict(zip(sweeps.TASKS, expected))
    assert table.loc["0.25", "content"] == pytest.approx(
        sum(by_task[t] for t in ("shape", "size", "pos")) / 3
    )
    assert table.loc["0.25", "variant factors"] == pytest.approx(
        sum(by_task[t] for t in ("hue", "chiral", "texture", "light")) / 4
    )
    assert abs(table.loc["0.25", "vs base"] - (sum(expected) / 9 - 50.0)) < 1e-9
    assert table.loc["0.75", "n"] == 0 and pd.isna(table.loc["0.75", "mean"])
    text = sweeps.markdown(sweeps.sweep_tables(tmp_path)["rho"])
    assert "| 0.75 | `loss.rho=0.75` | 0 | – |" in text and "+" in text
    assert table.loc["0.5", "numerics"] == 2 and table.loc["0.25", "numerics"] == 1
    assert "| 0.25 | `loss.rho=0.25` | 1 | 1 |" in text


def test_sweep_row_over_several_seeds_reports_the_spread_of_run_means(tmp_path):
    runs = [
        "results/runs/sweeps/views/f7_s0",
        "results/runs/sweeps/views/f7_s1",
        "results/runs/sweeps/views/f7_s2",
    ]
    for run, level in zip(runs, (60.0, 62.0, 67.0)):
        for task in sweeps.TASKS:
            dataset = "factorshapes/cls-rot" if task == "orient" else "factorshapes/cls-upright"
            _probe(tmp_path, run, task, level, dataset=dataset)
    variants = {
        "f7": {"overrides": ["train.epochs=7"], "runs": runs},
        "one": {"overrides": ["x=1"], "runs": runs[:1]},
    }
    records = sweeps.read_records([tmp_path / "records" / "sweeps.jsonl"])
    table = sweeps.sweep_table(variants, sweeps.probe_results(records)).set_index("variant")
    assert table.loc["f7", "n"] == 3 and abs(table.loc["f7", "mean"] - 63.0) < 1e-9
    assert abs(table.loc["f7", "mean std"] - 3.605551275) < 1e-6  # std(60, 62, 67), ddof 1
    assert pd.isna(table.loc["one", "mean std"])
    text = sweeps.markdown(table.reset_index())
    assert "| 63.0 ± 3.6 |" in text and "| 60.0 |" in text and "mean std" not in text


def test_sweeps_command_writes_tables_and_report_section(tmp_path):
    _study(tmp_path)
    written = sweeps.run(type("Args", (), {"results": tmp_path})())
    assert {p.name for p in written} == {"sweep_rho.md", "sweep_rho.csv"}
    assert "## Sweep: rho" in (tmp_path / "tables" / "sweep_rho.md").read_text()
    text = report.build_report(tmp_path, tmp_path / "runs")
    assert "## Sensitivity sweeps" in text and "### rho" in text
    # Sweep records stay out of the main tables: mast's factor row is the base run only.
    assert "mast - vicreg" not in text


def test_main_label_picks_the_methods_own_config():
    labels = [
        "mast (mast_factorized_r18w16_b128_16e_shapes)",
        "mast (mast_r18w16_b128_16e_shapes)",
        "vicreg",
    ]
    assert report.main_label(labels, "mast") == "mast (mast_r18w16_b128_16e_shapes)"
    assert report.main_label(labels, "vicreg") == "vicreg"
    assert report.main_label(["mast (mast_factorized_r18w16)"], "mast") is None


def test_study_time_section_sums_steps(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "times.jsonl").write_text(
        "\n".join(
            json.dumps({"step": s, "seconds": t})
            for s, t in [
                ("pretrain a_s0", 3600),
                ("classification a_s0", 1800),
                ("pretrain b_s0", 1800),
            ]
        )
        + "\n"
    )
    lines = report.study_time_section(tmp_path)
    assert "**2.00 h**" in lines[0] and "| pretrain | 2 | 1.50 |" in lines


def test_bench_section_demotes_headings_and_names_the_command_when_absent(tmp_path):
    assert report.bench_section(tmp_path) == ["No benchmarks yet (`make bench`)."]
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "README.md").write_text(
        "# Benchmarks\n\nMachine: x\n\n## Data pipeline\n\n| a |\n"
    )
    assert report.bench_section(tmp_path) == [
        "",
        "Machine: x",
        "",
        "### Data pipeline",
        "",
        "| a |",
    ]


def test_mask_movement_and_diagnostics_of_a_run(tmp_path):
    import torch

    from analysis import diagnostics

    # NaN without masks
    assert diagnostics.mask_movement(None)[0] != diagnostics.mask_movement(None)[0]
    same = torch.tensor([[0.0, 1.0, -1.0, 2.0]] * 3)
    std, corr = diagnostics.mask_movement(same)
    assert abs(std - same[0].std().item()) < 1e-6 and abs(corr - 1.0) < 1e-6
    opposite = torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.0, -1.0, 1.0, -2.0]])
    assert abs(diagnostics.mask_movement(opposite)[1] + 1.0) < 1e-6
    run = tmp_path / "runs" / "sweeps" / "rho" / "0.25_s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "method: mast\nviews: {mode: pair, resample: bernoulli, resample_p: 0.5}\n"
    )
    steps = [
        {
            "loss": 1.0,
            "inv": 0.1 * i,
            "var": 0.5,
            "cov": 2.0,
            "gate_rate": {"crop": 1.0, "flip": 0.2, "blur": 0.4},
            "uncertainty_spread": {"crop": 1.0, "flip": 3.0},
        }
        for i in range(10)
    ]
    (run / "log.jsonl").write_text("\n".join(json.dumps(s) for s in steps) + "\n")
    torch.save({"masks": same, "mask_kind": "learned", "method": "mast"}, run / "last.pt")
    row = diagnostics.diagnose(run, tmp_path / "runs")
    assert row["run"] == "sweeps/rho/0.25_s0" and row["resample"] == "bernoulli p=0.5"
    assert abs(row["inv"] - 0.7) < 1e-9  # steps 5..9: mean of 0.5..0.9
    assert abs(row["gate_rate_other"] - 0.3) < 1e-9 and abs(row["unc_spread"] - 2.0) < 1e-9
    assert diagnostics.run_folders(tmp_path / "runs") == [run]
    # the table keeps the row of a run whose folder is gone, and a second write does not mark it
    # twice
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "diagnostics.csv").write_text("run,method,inv\nvicreg_s0,vicreg,0.25\n")
    args = argparse.Namespace(runs=tmp_path / "runs", results=results)
    diagnostics.run(args)
    diagnostics.run(args)
    table = pd.read_csv(results / "tables" / "diagnostics.csv")
    assert table["run"].tolist() == ["sweeps/rho/0.25_s0", "vicreg_s0 †"]
    assert table.set_index("run").loc["vicreg_s0 †", "inv"] == 0.25
    assert "| vicreg_s0 † | vicreg |" in (results / "tables" / "diagnostics.md").read_text()


def test_sweep_rows_say_whether_their_runs_are_current(tmp_path):
    _study(tmp_path)
    table = sweeps.sweep_tables(tmp_path)["rho"].set_index("variant")
    # the base's ledger entry has no resolved config: current only at today's version
    assert table.loc["0.5", "current"] == "no" and table.loc["0.75", "current"] == "–"
    ledger = {
        "results/runs/mast_r18w16_b128_16e_shapes_s0": {
            "numerics": 2,
            "resolved": {"method": "vicreg"},
        }
    }
    (tmp_path / "study" / "runs.json").write_text(json.dumps(ledger))
    assert sweeps.sweep_tables(tmp_path)["rho"].set_index("variant").loc["0.5", "current"] == "yes"


def _subspace_study(results, and_offset, hue_gain):
    """VICReg method runs at 60 on every task (+ seed noise); AND runs ``and_offset`` above; under
    hue 0.5 the VICReg runs lose hue and AND gains ``hue_gain`` on hue and shape."""
    runs = {
        "and": [f"results/runs/sweeps/combine/and_s{s}" for s in range(3)],
        "vicreg_hue05": [f"results/runs/sweeps/conflict/vicreg_hue05_s{s}" for s in range(3)],
        "and_hue05": [f"results/runs/sweeps/conflict/and_hue05_s{s}" for s in range(3)],
    }
    index = {
        "methods": ["vicreg_r18w16_b128_16e_shapes"],
        "sweeps": {
            "combine": {"and": {"overrides": [], "runs": runs["and"]}},
            "conflict": {
                v: {"overrides": [], "runs": runs[v]} for v in ("vicreg_hue05", "and_hue05")
            },
        },
    }
    (results / "study").mkdir(parents=True)
    (results / "study" / "index.json").write_text(json.dumps(index))
    for s, noise in enumerate((-0.1, 0.0, 0.1)):
        for task in sweeps.TASKS:
            dataset = "factorshapes/cls-rot" if task == "orient" else "factorshapes/cls-upright"
            base = 60.0 + noise
            _probe(
                results,
                f"results/runs/vicreg_r18w16_b128_16e_shapes_s{s}",
                task,
                base,
                "classification.jsonl",
                dataset,
            )
            _probe(results, runs["and"][s], task, base + and_offset, dataset=dataset)
            hue_cut = -20.0 if task == "hue" else 0.0
            _probe(results, runs["vicreg_hue05"][s], task, base + hue_cut, dataset=dataset)
            gain = hue_gain if task in ("hue", "shape") else 0.0
            _probe(results, runs["and_hue05"][s], task, base + gain, dataset=dataset)


@pytest.mark.parametrize(
    "and_offset, hue_gain, met, beats", [(2.0, 3.0, "met", "yes"), (0.5, -1.0, "not met", "no")]
)
def test_subspace_claims_against_vicreg(tmp_path, and_offset, hue_gain, met, beats):
    _subspace_study(tmp_path, and_offset, hue_gain)
    text = "\n".join(report.claim_subspaces(tmp_path))
    assert f"| `combine/and` | 3 | {60 + and_offset:.1f} ± 0.1 |" in text
    assert f"the criterion (at least +1, beyond two standard errors) is **{met}**" in text
    assert f"beats both on hue and shape together (beyond two standard errors): **{beats}**" in text


def test_the_best_subspace_row_is_checked_and_compared_with_its_controls(tmp_path):
    _subspace_study(tmp_path, 0.5, 3.0)
    index = json.loads((tmp_path / "study" / "index.json").read_text())
    target = [f"results/runs/sweeps/combine/and_target_s{s}" for s in range(3)]
    index["sweeps"]["combine"]["and_target"] = {"overrides": [], "runs": target}
    index["methods"].append("augself_r18w16_b128_16e_shapes")
    (tmp_path / "study" / "index.json").write_text(json.dumps(index))
    for s, noise in enumerate((-0.1, 0.0, 0.1)):
        for task in sweeps.TASKS:
            dataset = "factorshapes/cls-rot" if task == "orient" else "factorshapes/cls-upright"
            _probe(tmp_path, target[s], task, 62.0 + noise, dataset=dataset)
            _probe(
                tmp_path,
                f"results/runs/augself_r18w16_b128_16e_shapes_s{s}",
                task,
                61.0 + noise,
                "classification.jsonl",
                dataset,
            )
    text = "\n".join(report.claim_subspaces(tmp_path))
    assert "| `augself` | 3 | 61.0 ± 0.1 |" in text
    assert "The best MAST configuration on VICReg's pairs, `combine/and_target`" in text
    assert "+2.0 points on the nine-task mean (beyond two standard errors)" in text
    assert "`combine/and_target`: the subspace target against none: +1.5 points" in text
    assert (
        "`combine/and_target`: the subspace target against AugSelf (its objective from the " in text
    )
    assert "no subspaces): +1.0 points (beyond two standard errors)" in text
    hue = ["conflict/and_target_w5_hue05", "conflict/augself_target_objectives_w5_hue05"]
    assert report.subspace_controls(hue) == [
        (*hue, f"`{hue[0]}`: the subspace target against AugSelf predicting the same differences "
         "from the backbone at the same weight")
    ]  # fmt: skip
    width = report.subspace_controls(["combine/and_target_w5", "combine/and_target_w5_h128"])
    assert (
        "combine/and_target_w5_h128",
        "combine/and_target_w5",
        "`combine/and_target_w5_h128`: target heads 128 wide against AugSelf's 512 "
        "(`combine/and_target_w5`)",
    ) in width
    widths = ["combine/and_target_w5", "combine/and_target_w5_h128", "combine/and_target_w5_h32"]
    narrow = [pair for pair in report.subspace_controls(widths) if pair[0] == widths[2]]
    assert [control for _, control, _ in narrow] == [widths[0], widths[1]]
    assert narrow[1][2] == (
        "`combine/and_target_w5_h32`: target heads 32 wide against 128 "
        "(`combine/and_target_w5_h128`)"
    )
    assert all(
        pair[0] != widths[1] or pair[1] != widths[2] for pair in report.subspace_controls(widths)
    )
    assert report.subspace_controls(["combine/and", "combine/and_fixed", "augself"]) == [
        (
            "combine/and",
            "combine/and_fixed",
            "`combine/and`: learned assignment against a fixed random one",
        )
    ]
