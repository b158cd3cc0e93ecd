"""The report builder on partial results: it builds, checks the claims it can, and names what is
missing."""

import json

import pandas as pd

from analysis import report, tables
from analysis.__main__ import main as analysis_main
from core.records import append_record, make_record


def _cls(method, task, value, seed=0, ckpt=None, **fields):
    """A linear-probe record; ``ckpt`` None: a run folder per method and seed, ``{}``: none."""
    return make_record(
        **{
            "stage": "classification",
            "method": method,
            "arch": "resnet18w16",
            "dataset": "factorshapes/cls-upright",
            "task": task,
            "protocol": "linear-lbfgs",
            "seed": seed,
            "metric": "top1",
            "value": value,
            "pretrain_ckpt": {
                "path": f"runs/{method}_x_s{seed}/last.pt",
                "sha256": f"{method}{seed}",
            }
            if ckpt is None
            else ckpt or None,
            "git_commit": "abc1234",
            **fields,
        }
    )


def _write_records(results):
    path = results / "records" / "classification.jsonl"
    for seed, (m_hue, v_hue) in enumerate([(80.0, 90.0), (82.0, 94.0)]):
        append_record(path, _cls("mast", "hue", m_hue, seed))
        append_record(path, _cls("vicreg", "hue", v_hue, seed))
        append_record(path, _cls("mast", "texture", 50.0, seed))
        append_record(path, _cls("vicreg", "texture", 40.0, seed))
    append_record(path, _cls("random-init", "hue", 55.0, ckpt=None) | {"pretrain_ckpt": None})


def test_partial_report_builds_checks_claim_one_and_lists_missing(tmp_path):
    _write_records(tmp_path)
    text = report.build_report(tmp_path, tmp_path / "runs")
    # Claim 1 from hand-made means: hue 81 vs 92 (-11), texture 50 vs 40 (+10): 1 of 2 tasks, mean
    # -0.5.
    assert "MAST >= VICReg on 1 of 2 factor tasks (texture); mean difference -0.5 points" in text
    # one task clearly better, one clearly worse, the mean inside the spread: no verdict either way
    assert "MAST's own config against VICReg **is inconclusive on** the claim" in text
    # Per seed the two-task means are mast 65, 66 and vicreg 65, 67. A difference is marked when it
    # exceeds twice sqrt(std_a^2/n_a + std_b^2/n_b): hue 11 > 2*sqrt(2/2 + 8/2) = 4.5, texture 10 >
    # 0, mean 0.5 < 2*sqrt(1.25).
    assert "| mast | 2 | 81.0 ± 1.4 | 50.0 ± 0.0 | 65.5 ± 0.7 |" in text
    assert "| vicreg | 2 | 92.0 ± 2.8 | 40.0 ± 0.0 | 66.0 ± 1.4 |" in text
    assert "| mast − vicreg | | -11.0* | +10.0* | -0.5 |" in text
    assert "better on texture, worse on hue." in text
    # no texture record: the mean of what it has
    assert "| random-init | 1 | 55.0 | – | 55.0 |" in text
    # No detection, segmentation, masks or uncertainty yet: each named with the command that makes
    # it.
    for line in (
        "detection: none yet; run `make eval-detection`",
        "segmentation: none yet; run `make eval-segmentation`",
        "masks: none yet",
        "uncertainty: none yet",
    ):
        assert line in text
    assert "81.0 ± 1.4 (n=2)" in text  # the mast hue cell of the table


def test_claims_two_and_three_read_the_analysis_outputs(tmp_path):
    figures = tmp_path / "figures"
    (figures / "masks" / "run").mkdir(parents=True)
    ops = ["crop", "flip"]
    # Disjoint halves of 8 dims: IoU 0 against chance 1/3 -> separated.
    (figures / "masks" / "run" / "masks.json").write_text(
        json.dumps(
            {
                "label": "run",
                "mask_kind": "learned",
                "ops": ops,
                "dim": 8,
                "iou": [[1, 0], [0, 1]],
                "unique": {"crop": 4, "flip": 4},
                "shared": {"crop": 0, "flip": 0},
                "density": {"crop": 0.5, "flip": 0.5},
            }
        )
    )
    (figures / "uncertainty" / "run").mkdir(parents=True)
    (figures / "uncertainty" / "run" / "uncertainty.json").write_text(
        json.dumps(
            {
                "label": "run",
                "n_images": 64,
                "per_op": {"crop": {"spearman_rho": 0.6}, "flip": {"spearman_rho": None}},
            }
        )
    )
    lines, missing = report.claim_masks(figures)
    assert (
        not missing
        and "mean off-diagonal IoU 0.00 against 0.33" in lines[0]
        and "separate the ops" in lines[0]
    )
    # the same sets from an AND assignment: disjoint by construction, so no pass on their overlap
    summary = json.loads((figures / "masks" / "run" / "masks.json").read_text())
    summary |= {"mask_kind": "assign", "change_rho": {"crop": 0.7, "flip": 0.2}}
    (figures / "masks" / "run" / "masks.json").write_text(json.dumps(summary))
    (line,), _ = report.claim_masks(figures)
    assert "separate the ops" not in line and "disjoint by construction" in line
    assert line.endswith("crop +0.70, flip +0.20; 1 of 2 ops reach 0.5.")
    lines, missing = report.claim_uncertainty(figures)
    assert not missing and "crop +0.60, flip n/a" in lines[0] and "tracks difficulty" in lines[0]
    assert "rho > 0.1 for 1 of 1" in lines[0]


def test_report_command_writes_readme_and_bad_input_is_one_line(tmp_path, capsys):
    _write_records(tmp_path)
    assert (
        analysis_main(["report", "--results", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 0
    )
    assert (tmp_path / "README.md").read_text().startswith("# Results")
    assert analysis_main(["masks", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.pt" in err[0]


def test_what_was_run_lists_pretraining_folders_only(tmp_path):
    def folder(name, config, stage=None):
        path = tmp_path / name
        path.mkdir()
        (path / "config.yaml").write_text(config)
        (path / "log.jsonl").write_text(
            json.dumps({"step": 10, "loss": 1.5, "img_per_s": 400.0}) + "\n"
        )
        if stage:
            (path / "run.json").write_text(json.dumps({"stage": stage}))

    folder("mast_s0", "method: mast\nseed: 0\ntrain: {epochs: 16}\n", stage="pretrain")
    folder("copied_s1", "method: vicreg\nseed: 1\n")  # no run.json: its config names a method
    folder("classification", "tasks: []\n", stage="classification")
    rows = "\n".join(report.runs_section(report.pretraining_runs(tmp_path), tmp_path))
    assert "`mast_s0` | mast | 0 | 16 | 10 | 1.500 | 400 |" in rows
    assert "`copied_s1` | vicreg | 1" in rows
    assert "classification" not in rows and "†" not in rows


def test_rows_of_runs_whose_folders_are_gone_are_kept_and_marked(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    here = runs / "mast_s1"
    here.mkdir(parents=True)
    (here / "config.yaml").write_text("method: mast\nseed: 1\ntrain: {epochs: 16}\n")
    (here / "log.jsonl").write_text(
        json.dumps({"step": 20, "loss": 2.0, "img_per_s": 300.0}) + "\n"
    )
    (results / "tables").mkdir(parents=True)
    # an earlier analysis saw mast_s0 (now gone) and an older mast_s1 (here again: its new row wins)
    (results / report.RUNS_CSV).write_text(
        "run,method,seed,epochs,steps,final_loss,img_per_s\nmast_s0,mast,0,16,1248,8.5,172\nmast_s1,mast,1,16,5,9.0,1\n"
    )
    table = report.pretraining_runs(runs, results)
    assert table["run"].tolist() == ["mast_s0 †", "mast_s1"]
    assert table.set_index("run").loc["mast_s1", "steps"] == 20
    text = "\n".join(report.runs_section(table, runs))
    assert "| `mast_s0` † | mast | 0 | 16 | 1248 | 8.500 | 172 |" in text and text.startswith(
        "†: the run's folder"
    )
    (results / report.RUNS_CSV).write_text(table.to_csv(index=False))  # as `report` saves it
    # kept twice: one mark
    again = tables.keep_gone_runs(table.iloc[1:], results / report.RUNS_CSV, runs)
    assert again["run"].tolist() == ["mast_s0 †", "mast_s1"]


def test_claim_one_compares_each_mast_config_with_vicreg_and_says_when_one_seed_has_no_spread():
    def rec(config, method, task, value):
        return _cls(
            method, task, value, ckpt={"path": f"runs/{config}_s0/last.pt", "sha256": config}
        )

    records = [
        rec("mast_r18", "mast", "hue", 80.0),
        rec("mast_r18", "mast", "shape", 40.0),
        rec("mast_factorized_r18", "mast", "hue", 85.0),
        rec("mast_factorized_r18", "mast", "shape", 50.0),
        rec("vicreg_r18", "vicreg", "hue", 90.0),
        rec("vicreg_r18", "vicreg", "shape", 44.0),
    ]
    lines, missing = report.claim_invariances(tables.measurements(pd.DataFrame(records)))
    text = "\n".join(lines)
    assert missing == []
    assert "| mast (mast_r18) − vicreg | | -10.0 | -4.0 | -7.0 |" in text
    assert "| mast (mast_factorized_r18) − vicreg | | -5.0 | +6.0 | +0.5 |" in text
    assert (
        "- MAST >= VICReg on 0 of 2 factor tasks (none); mean difference -7.0 points. A single seed"
        in text
    )
    assert (
        "- `mast (mast_factorized_r18)` >= VICReg on 1 of 2 factor tasks (shape); mean difference "
        "+0.5 points; without its largest gain (shape, +6.0) the mean difference is -5.0 (no "
        "spread to test). A single seed" in text
    )
    # one seed a side: no difference is clear, so neither config decides the claim; the best
    # configuration (the higher mean difference) is named beside MAST's own
    assert "MAST's own config against VICReg **is inconclusive on** the claim" in text
    assert (
        "the best MAST configuration, `mast (mast_factorized_r18)`, **is inconclusive on**" in text
    )
    # the best row per task; one seed a side gives no spread, so every other row is a tie
    assert (
        "| hue | `vicreg` | 90.0 | `mast (mast_factorized_r18)` (85.0), `mast (mast_r18)` (80.0) |"
        in text
    )
    assert "| shape | `mast (mast_factorized_r18)` | 50.0 |" in text


def _diff(rows):
    """A ``report.difference`` frame from (task, diff, clear) rows, the mean row last."""
    index = [task for task, _, _ in rows]
    return pd.DataFrame(
        {"diff": [d for _, d, _ in rows], "se": 0.5, "clear": [c for _, _, c in rows]},
        index=index,
    )


def test_claim_one_verdict_reads_the_mean_beyond_two_standard_errors():
    tasks = [("hue", 3.0, True), ("chiral", -2.0, True), ("pos", -0.3, False)]
    assert report.verdict(_diff([*tasks, ("mean", 1.2, True)])) == "supports"
    # how the tasks split does not move it: more tasks clearly worse, the mean still clearly higher
    worse = [("hue", 9.0, True), ("size", -1.0, True), ("chiral", -2.0, True)]
    assert report.verdict(_diff([*worse, ("mean", 1.5, True)])) == "supports"
    assert report.verdict(_diff([*tasks, ("mean", -0.9, True)])) == "does not support"
    assert report.verdict(_diff([*tasks, ("mean", 1.2, False)])) == "is inconclusive on"


def test_claim_one_says_when_one_task_carries_a_supporting_row():
    index = pd.MultiIndex.from_product([["mast", "vicreg"], [0, 1, 2]], names=["label", "seed"])
    scores = pd.DataFrame(
        {
            # mast far ahead on texture, level elsewhere (seed noise of a point)
            "texture": [60.0, 61.0, 62.0, 36.0, 37.0, 38.0],
            "hue": [98.0, 99.0, 100.0, 99.0, 100.0, 98.0],
            "shape": [43.0, 44.0, 42.0, 42.0, 44.0, 43.0],
        },
        index=index,
    )
    top = report.without_top_task(scores, "mast", "vicreg")
    assert top is not None
    task, gain, rest = top
    assert (task, gain) == ("texture", 24.0)
    # the other two tasks: per seed means 70.5, 71.5, 71 against 70.5, 72, 70.5: +0.0, not clear
    assert rest["diff"] == 0.0 and not rest["clear"]
    # no task gained: nothing to leave out
    assert report.without_top_task(scores, "vicreg", "mast") is None
    records = [
        _cls(label, t, scores.loc[(label, seed), t], seed=seed)
        for label in ("mast", "vicreg")
        for seed in range(3)
        for t in scores.columns
    ]
    lines, _ = report.claim_invariances(tables.measurements(pd.DataFrame(records)))
    text = "\n".join(lines)
    assert (
        "MAST's own config against VICReg **supports** the claim that MAST helps tasks needing "
        "different invariances, through one task: without its largest gain (texture, +24.0) the "
        "mean difference is +0.0 (within 2 standard errors)." in text
    )


def test_best_per_task_marks_a_clear_winner_and_ties():
    index = pd.MultiIndex.from_product([["a", "b", "c"], [0, 1, 2]], names=["label", "seed"])
    scores = pd.DataFrame(
        {
            "hue": [90, 91, 89, 82, 83, 81, 89, 92, 88],
            "shape": [40, 41, 39, 50, 52, 48, 36, 36, 37],
        },
        index=index,
    ).astype(float)
    summary = report.seed_summary(scores)
    text = "\n".join(report.best_per_task(summary, ["a", "b", "c"]))
    assert "| hue | `a` | 90.0 ± 1.0 | `c` (89.7) |" in text  # b is 8 points below: clear
    assert "| shape | `b` | 50.0 ± 2.0 | none: clear |" in text
    assert "| mean | `b` | 66.0 ± 1.5 | `a` (65.0) |" in text  # c: 3 points, 2 SE = 2.0


def test_best_table_adds_box_and_mask_ap_compared_over_their_own_seeds():
    def ap(stage, method, value, seed):
        protocol, metric = (
            ("embedded-frcnn", "box_AP") if stage == "detection" else ("embedded-mrcnn", "mask_AP")
        )
        return _cls(
            method,
            "shape",
            value,
            seed=seed,
            stage=stage,
            dataset="factorshapes/det",
            protocol=protocol,
            metric=metric,
        )

    records = [_cls(m, "hue", 80.0 + s, seed=s) for m in ("mast", "vicreg") for s in range(3)]
    # box AP: vicreg clearly ahead (+3 points, spread 1); mask AP: within the spread
    records += [ap("detection", "vicreg", 9.0 + s, s) for s in range(3)]
    records += [ap("detection", "mast", 6.0 + s, s) for s in range(3)]
    records += [ap("segmentation", "vicreg", v, s) for s, v in enumerate([10.0, 12.0, 14.0])]
    records += [ap("segmentation", "mast", v, s) for s, v in enumerate([9.0, 11.0, 13.0])]
    lines, _ = report.claim_invariances(tables.measurements(pd.DataFrame(records)))
    text = "\n".join(lines)
    assert "| box AP (Faster R-CNN) | `vicreg` | 10.0 ± 1.0 | none: clear |" in text
    assert "| mask AP (Mask R-CNN) | `vicreg` | 12.0 ± 2.0 | `mast` (11.0) |" in text
    # one table: the AP rows follow the probe rows without a second header
    assert text.count("| task | best | score | within 2 SE of the best |") == 1


def test_readme_summary_block_is_rewritten_between_its_markers_only(tmp_path):
    _write_records(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Suite\n\nintro\n\n{report.README_BEGIN}\nold numbers\n{report.README_END}\n\n## Next\n"
    )
    assert report.update_readme(readme, tmp_path) == readme
    text = readme.read_text()
    assert text.startswith("# Suite\n\nintro\n\n") and text.endswith(
        f"{report.README_END}\n\n## Next\n"
    )
    assert "old numbers" not in text
    # The per-seed task means (mast 65, 66; vicreg 65, 67) summarised, then the claim's comparison
    # and verdict.
    assert (
        "| vicreg | 66.0 ± 1.4 (n=2) | – | – |" in text
        and "| mast | 65.5 ± 0.7 (n=2) | – | – |" in text
    )
    assert (
        "- MAST >= VICReg on 1 of 2 factor tasks (texture)" in text
        and "**is inconclusive on** the claim" in text
    )
    # idempotent
    assert report.update_readme(readme, tmp_path) == readme and readme.read_text() == text
    # No markers (or no file): nothing is written.
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# no markers\n")
    assert report.update_readme(plain, tmp_path) is None and plain.read_text() == "# no markers\n"
    assert report.update_readme(tmp_path / "absent.md", tmp_path) is None


def test_summary_shows_each_methods_pretraining_wall_time_from_the_ledger(tmp_path):
    path = tmp_path / "records" / "classification.jsonl"
    for seed in range(3):
        for method in ("mast", "vicreg"):
            ckpt = {"path": f"results/runs/{method}_x_s{seed}/last.pt", "sha256": f"{method}{seed}"}
            append_record(path, _cls(method, "hue", 80.0 + seed, seed, ckpt=ckpt))
    ledger = tmp_path / "study" / "times.jsonl"
    ledger.parent.mkdir(parents=True)
    steps = [
        ("pretrain mast_x_s0", 900.0),  # an older run of the folder: the latest whole one counts
        ("pretrain mast_x_s0", 300.0),
        ("pretrain mast_x_s0", 5.0),  # found the run done
        ("pretrain mast_x_s1", 360.0),
        ("pretrain mast_x_s2", 420.0),
        ("classification mast_x_s2", 60.0),
        ("pretrain vicreg_x_s0", 600.0),
    ]
    ledger.write_text("".join(json.dumps({"step": s, "seconds": t}) + "\n" for s, t in steps))
    seconds = report.pretrain_seconds(tmp_path)
    assert seconds == {
        "mast_x_s0": 300.0,
        "mast_x_s1": 360.0,
        "mast_x_s2": 420.0,
        "vicreg_x_s0": 600.0,
    }
    records = tables.load_results(tmp_path / "records")
    lines = report.summary_section(
        tables.measurements(records), tables.aggregate(records), seconds=seconds
    )
    text = "\n".join(lines)
    assert "| mast | 81.0 ± 1.0 (n=3) | – | – | 6.0 min (n=3) |" in text
    assert "| vicreg | 81.0 ± 1.0 (n=3) | – | – | 10.0 min (n=1) |" in text
    # runs trained on two CPUs: each cell names those of its own runs, as the ledger recorded them
    machines = {"mast_x_s0": "Intel(R) Xeon(R) Processor", "vicreg_x_s0": "AMD EPYC", "other": None}
    (tmp_path / "study" / "runs.json").write_text(
        json.dumps({f"results/runs/{f}": {"machine": {"cpu": c}} for f, c in machines.items()})
    )
    cpus = report.pretrain_cpus(tmp_path)
    assert cpus == {"mast_x_s0": "Intel Xeon", "vicreg_x_s0": "AMD EPYC"}
    lines = report.summary_section(
        tables.measurements(records), tables.aggregate(records), seconds=seconds, cpus=cpus
    )
    text = "\n".join(lines)
    assert "| mast | 81.0 ± 1.0 (n=3) | – | – | 6.0 min (n=3; Intel Xeon) |" in text
    assert "| vicreg | 81.0 ± 1.0 (n=3) | – | – | 10.0 min (n=1; AMD EPYC) |" in text
    one = {"mast_x_s0": "AMD EPYC", "vicreg_x_s0": "AMD EPYC"}  # one CPU: nothing to say
    lines = report.summary_section(
        tables.measurements(records), tables.aggregate(records), seconds=seconds, cpus=one
    )
    assert "| mast | 81.0 ± 1.0 (n=3) | – | – | 6.0 min (n=3) |" in "\n".join(lines)


def test_real_data_section_marks_what_beats_pixels_and_random_init():
    from analysis.report import real_data_section
    from analysis.tables import measurements

    def rec(method, value, seed=0, trained=True):  # trained: a run folder per seed
        return _cls(method, "class", value, seed, None if trained else {}, dataset="fashion_mnist")

    records = [rec("vicreg", v, s) for s, v in enumerate([86.0, 86.2, 85.8])]
    records += [rec("mast", v, s) for s, v in enumerate([84.0, 84.4, 83.6])]
    records += [rec("random-init", v, s, trained=False) for s, v in enumerate([70.0, 71.0, 72.0])]
    records.append(rec("pixels", 84.1, trained=False))
    lines = real_data_section(measurements(pd.DataFrame(records)))
    text = "\n".join(lines)
    assert "| vicreg | 86.0 ± 0.1 | 3 |" in text and "| pixels | 84.1 | 1 |" in text
    assert (
        "- vicreg: +1.9 against pixels (beyond 2 SE), +15.0 against random-init (beyond 2 SE); "
        "beats both beyond 2 SE: yes." in text
    )
    assert (
        "- mast: -0.1 against pixels, +13.0 against random-init (beyond 2 SE); beats both "
        "beyond 2 SE: **no**." in text
    )
    assert real_data_section(pd.DataFrame())[0].startswith("Not run yet: `make real`")


def test_diverged_runs_are_listed_and_left_out_of_the_tables(tmp_path):
    _write_records(tmp_path)
    path = tmp_path / "records" / "classification.jsonl"
    append_record(path, _cls("mast", "hue", float("nan"), seed=2, diverged="loss not finite at 9"))
    text = report.build_report(tmp_path, tmp_path / "runs")
    assert "Runs that diverged" in text
    assert (
        "| classification | factorshapes/cls-upright | linear-lbfgs | mast | resnet18w16 | 2 |"
        in text
    )
    assert "loss not finite at 9" in text
    assert "| mast | 2 | 81.0 ± 1.4 |" in text  # still n = 2: the null record is not a seed
    _write_records(tmp_path / "clean")
    assert "Runs that diverged" not in report.build_report(tmp_path / "clean", tmp_path / "runs")
