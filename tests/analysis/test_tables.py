"""Result tables on hand-made records: numbers checked against hand computation, not just "it
ran"."""

import pandas as pd
import pytest

from analysis.tables import (
    aggregate,
    families,
    family_rows,
    load_published,
    markdown_table,
    pivot,
    slugify,
    tex_escape,
    write_tables,
)
from core.records import append_record, make_record

UPRIGHT = "factorshapes/cls-upright"
LINEAR = "classification · factorshapes/cls-upright · linear-lbfgs"
NO_PUBLISHED = pd.DataFrame()


def rec(
    method,
    task,
    value,
    seed=0,
    run=None,
    time="2026-01-01T00:00:00+0000",
    protocol="linear-lbfgs",
    dataset=UPRIGHT,
    stage="classification",
    metric="top1",
    epochs=16,
    arch="resnet18w16",
):
    """One record; ``run`` is the pretraining run folder (None: no checkpoint, as for the
    random-init floor)."""
    ckpt = None if run is None else {"path": f"results/runs/{run}/last.pt", "sha256": f"sha-{run}"}
    return make_record(
        stage=stage,
        method=method,
        arch=arch,
        pretrain_ckpt=ckpt,
        pretrain_epochs=epochs,
        dataset=dataset,
        task=task,
        protocol=protocol,
        seed=seed,
        metric=metric,
        value=value,
        time=time,
        git_commit="test",
        n_train=10,
        n_test=10,
        config={},
    )


def frame(records):
    return pd.DataFrame(records)


def strip_bold(text):
    return text.replace("**", "")


def row(table, method):
    return table[table["method"] == method].iloc[0]


def three_seeds():
    return [
        rec("mast", "shape", v, seed=s, run="mast_a_s0") for s, v in enumerate([60.0, 62.0, 64.0])
    ]


def test_mean_std_and_seed_count_of_a_cell():
    records = three_seeds() + [rec("mast", "hue", 70.0, run="mast_a_s0")]
    agg = aggregate(frame(records)).set_index("task")
    assert agg.loc["shape", ["mean", "std", "n"]].tolist() == pytest.approx([62.0, 2.0, 3])
    table = pivot(agg.reset_index(), LINEAR, NO_PUBLISHED)
    assert strip_bold(row(table, "mast")["shape"]) == "62.0 ± 2.0 (n=3)"
    assert strip_bold(row(table, "mast")["hue"]) == "70.0 (n=1)"  # n=1: no std shown


def test_pretraining_seeds_of_one_config_aggregate_together():
    # three pretraining seeds (run folders _s0.._s2), one downstream seed each: one row, n=3
    records = [
        rec("mast", "shape", v, run=f"mast_a_s{s}") for s, v in enumerate([10.0, 20.0, 30.0])
    ]
    agg = aggregate(frame(records))
    assert len(agg) == 1 and agg.loc[0, "label"] == "mast"
    assert (agg.loc[0, "mean"], agg.loc[0, "std"], agg.loc[0, "n"]) == pytest.approx(
        (20.0, 10.0, 3)
    )


def test_rerun_of_same_seed_counts_once_and_latest_wins():
    late = rec("mast", "shape", 30.0, seed=0, run="mast_a_s0", time="2026-01-02T00:00:00+0000")
    early = rec("mast", "shape", 10.0, seed=0, run="mast_a_s0", time="2026-01-01T00:00:00+0000")
    other = rec("mast", "shape", 20.0, seed=1, run="mast_a_s0")
    # the later rerun comes first in the file: time decides
    agg = aggregate(frame([late, early, other]))
    assert (agg.loc[0, "mean"], agg.loc[0, "n"]) == pytest.approx((25.0, 2))


def test_records_of_a_checkpoint_retrained_into_the_same_path_are_dropped():
    def retrained(r, sha):
        r["pretrain_ckpt"] = {**r["pretrain_ckpt"], "sha256": sha}
        return r

    day = "2026-01-0{}T00:00:00+0000"
    old_probe = retrained(rec("mast", "shape", 10.0, run="mast_a_s0", time=day.format(1)), "old")
    old_box = retrained(
        rec("mast", "shape", 7.0, run="mast_a_s0", time=day.format(1), stage="detection"), "old"
    )
    new_probe = retrained(rec("mast", "shape", 30.0, run="mast_a_s0", time=day.format(2)), "new")
    kept = rec("mast", "shape", 5.0, run="mast_b_s0", stage="detection")
    agg = aggregate(frame([old_probe, old_box, new_probe, kept])).set_index(["stage", "label"])
    # the probe rerun replaces the old probe; the old weights' box AP is gone, not mixed in
    assert agg.loc[("classification", "mast"), "mean"] == pytest.approx(30.0)
    assert agg.loc["detection"]["mean"].tolist() == pytest.approx([5.0])
    # detection rerun on the new weights brings the cell back
    new_box = retrained(
        rec("mast", "shape", 9.0, run="mast_a_s0", time=day.format(3), stage="detection"), "new"
    )
    agg = aggregate(frame([old_probe, old_box, new_probe, new_box, kept]))
    assert sorted(agg.loc[agg["stage"] == "detection", "mean"]) == pytest.approx([5.0, 9.0])


def test_configs_sharing_a_method_get_told_apart():
    records = [
        rec("mast", "shape", 50.0, run="mast_a_s0"),
        rec("mast", "shape", 52.0, seed=1, run="mast_a_s1"),
        rec("mast", "shape", 40.0, run="mast_b_s0"),
    ]
    agg = aggregate(frame(records)).set_index("label")
    assert sorted(agg.index) == ["mast (mast_a)", "mast (mast_b)"]
    assert agg.loc["mast (mast_a)", "n"] == 2 and agg.loc["mast (mast_a)", "mean"] == pytest.approx(
        51.0
    )


def ceiling_and_published_records():
    return [
        rec("mast", "shape", 62.0, run="mast_a_s0"),
        rec("mast", "hue", 60.0, run="mast_a_s0"),
        rec("vicreg", "shape", 50.0, run="vicreg_a_s0"),
        rec("vicreg", "hue", 70.0, run="vicreg_a_s0"),
        rec("random-init", "shape", 55.0, epochs=0),
        rec("random-init", "hue", 80.0, epochs=0),
        rec("supervised", "shape", 99.0, run="ceil_shape", epochs=8),
        rec("supervised", "hue", 99.5, run="ceil_hue", epochs=8),
    ]


def fake_published():
    return pd.DataFrame(
        [
            dict(
                method="BYOL",
                arch="resnet50",
                epochs=1000,
                stage="classification",
                datasets="factorshapes/cls-upright",
                protocol="linear-lbfgs",
                task="shape",
                metric="top1",
                value=99.9,
                shown="99.9",
                cite="Someone 2020",
                source="paper",
                note="",
                label="BYOL (published, Someone 2020)",
            )
        ]
    )


def test_best_mark_per_column_skips_ceiling_and_published():
    table = pivot(aggregate(frame(ceiling_and_published_records())), LINEAR, fake_published())
    bold = {
        col: table.loc[table[col].str.startswith("**"), "method"].tolist()
        for col in ("shape", "hue")
    }
    # the floor competes; 99.x references do not
    assert bold == {
        "shape": ["mast"],
        "hue": ["random-init"],
    }
    assert table.attrs["best"] == bold
    assert row(table, "BYOL (published, Someone 2020)")["shape"] == "99.9"
    assert row(table, "BYOL (published, Someone 2020)")["hue"] == ""


def test_rows_ordered_methods_floor_ceiling_published():
    table = pivot(aggregate(frame(ceiling_and_published_records())), LINEAR, fake_published())
    assert table["method"].tolist() == [
        "mast",
        "vicreg",
        "random-init",
        "supervised",
        "BYOL (published, Someone 2020)",
    ]
    assert table["role"].tolist() == ["ours", "ours", "floor", "ceiling", "published"]
    assert table["epochs"].tolist() == ["16", "16", "0", "8", "1000"]
    # the per-label ceiling checkpoints (one per task) still form one row
    assert strip_bold(row(table, "supervised")["hue"]) == "99.5 (n=1)"


def test_detection_columns_are_metrics_and_published_voc_rows_join():
    records = [
        rec(
            "mast",
            "objects",
            v,
            stage="detection",
            dataset="voc07+12",
            protocol="voc0712-frcnn-c4-24k",
            metric=m,
            run="mast_r50_s0",
        )
        for m, v in [("box_AP", 50.0), ("box_AP50", 80.0), ("box_AP75", 55.0)]
    ]
    agg = aggregate(frame(records))
    family = "detection · voc07+12 · voc0712-frcnn-c4-24k"
    assert families(agg) == [family]
    table = pivot(agg, family)  # default: the shipped published numbers
    assert list(table.columns) == [
        "method",
        "role",
        "arch",
        "epochs",
        "box_AP",
        "box_AP50",
        "box_AP75",
    ]
    moco = row(table, "MoCo v2 (published, MoCo detection README)")
    assert (moco["box_AP50"], moco["box_AP"], moco["box_AP75"]) == ("82.5", "57.4", "64.0")
    assert table.loc[table["role"] == "published", "method"].str.contains("published").all()
    assert all(
        cell.startswith("**") for cell in row(table, "mast")[["box_AP", "box_AP50", "box_AP75"]]
    )


def test_published_numbers_of_protocols_md():
    published = load_published()
    published["dataset"] = published["datasets"].str.split("|").str[0]
    published = published.set_index(["method", "epochs", "dataset", "metric"])
    assert published.loc[("VICReg", 1000, "imagenet", "top1"), "value"] == pytest.approx(73.2)
    assert published.loc[("VICReg", 1000, "cifar10", "top1"), "value"] == pytest.approx(92.07)
    assert published.loc[("MoCo v2", 800, "voc", "box_AP50"), "value"] == pytest.approx(82.5)
    assert load_published()["label"].str.contains(r"\(published, ").all()
    assert len(load_published()) == 21


def test_published_rows_stay_out_of_unrelated_families():
    # shipped CSV has no FactorShapes numbers
    long = family_rows(aggregate(frame(three_seeds())), LINEAR)
    assert set(long["role"]) == {"ours"}


def test_rendering_escapes_and_marks():
    assert tex_escape("**62.0 ± 2.0 (n=3)**") == r"\textbf{62.0 $\pm$ 2.0 (n=3)}"
    assert tex_escape("mast (mast_a)") == r"mast (mast\_a)"
    assert (
        markdown_table(pd.DataFrame({"a": ["x|y"], "b": [1]}))
        == "| a | b |\n|---|---|\n| x\\|y | 1 |"
    )
    assert slugify(LINEAR) == "classification_factorshapes-cls-upright_linear-lbfgs"


def test_write_tables_files_and_csv_round_trip(tmp_path):
    records_dir, out = tmp_path / "records", tmp_path / "tables"
    for r in three_seeds() + [rec("mast", "shape", 40.0, run="mast_b_s0")]:
        append_record(records_dir / "classification.jsonl", r)
    append_record(
        records_dir / "pilot.jsonl", rec("random-init", "shape", 1.0, stage="pilot-probe")
    )
    written = write_tables(records_dir, out)
    stem = out / "classification_factorshapes-cls-upright_linear-lbfgs"
    for suffix in (".md", ".csv", ".tex"):
        assert stem.with_suffix(suffix) in written and stem.with_suffix(suffix).stat().st_size > 0
    assert not list(out.glob("pilot*")) and "pilot-probe" not in (out / "index.md").read_text()
    csv = pd.read_csv(stem.with_suffix(".csv")).set_index("label")
    assert csv.loc["mast (mast_a)", ["mean", "std", "n"]].tolist() == pytest.approx([62.0, 2.0, 3])
    assert "**62.0 ± 2.0 (n=3)**" in stem.with_suffix(".md").read_text()
    assert r"mast (mast\_a) & ours" in stem.with_suffix(".tex").read_text()
    assert (
        "classification_factorshapes-cls-upright_linear-lbfgs.md" in (out / "index.md").read_text()
    )
    assert (out / "published.md").exists()


def test_no_records_writes_only_an_index_saying_so(tmp_path):
    (tmp_path / "records").mkdir()
    written = write_tables(tmp_path / "records", tmp_path / "tables")
    assert written == [tmp_path / "tables" / "index.md"]
    assert "No records yet" in written[0].read_text()
    assert write_tables(tmp_path / "missing", tmp_path / "tables2")[0].name == "index.md"


def test_write_tables_removes_family_tables_whose_records_are_gone(tmp_path):
    from analysis import tables
    from core.records import append_record, make_record

    out = tmp_path / "tables"
    out.mkdir()
    for name in (
        "classification_old-data_supervised.md",
        "classification_old-data_supervised.csv",
        "invariance.md",
        "sweep_rho.md",
        "diagnostics.csv",
    ):
        (out / name).write_text("x")
    append_record(
        tmp_path / "records" / "classification.jsonl",
        make_record(
            stage="classification",
            method="mast",
            arch="resnet18w16",
            dataset="factorshapes/cls-upright",
            task="hue",
            protocol="knn",
            seed=0,
            metric="top1",
            value=50.0,
        ),
    )
    tables.write_tables(tmp_path / "records", out)
    names = {p.name for p in out.iterdir()}
    assert (
        "classification_old-data_supervised.md" not in names
        and "classification_old-data_supervised.csv" not in names
    )
    assert {
        "invariance.md",
        "sweep_rho.md",
        "diagnostics.csv",
        "classification_factorshapes-cls-upright_knn.md",
    } <= names


def test_transfer_table_collects_augself_protocol_records_in_paper_order():
    from analysis.tables import transfer_table

    grid45 = {"l2_grid": [0.1] * 45, "image_size": 96}

    def transfer(method, dataset, value, seed, metric="top1", config=grid45):
        r = rec(method, "class", value, run=f"{method}_a_s{seed}", dataset=dataset, metric=metric)
        r["config"] = config
        return r

    records = [transfer("vicreg", "cifar10", v, s) for s, v in enumerate([80.0, 82.0])]
    records += [transfer("vicreg", "folder:pets", 70.0, 0, "class_avg")]
    records += [transfer("mast", "folder:Food-101", 60.0, 0), transfer("mast", "cifar10", 81.0, 0)]
    records += [transfer("mast", "cifar100", 50.0, 0, config={"l2_grid": [1.0] * 7})]  # not it
    table = transfer_table(frame(records)).set_index("method")
    assert list(table.columns) == ["CIFAR10", "Food", "Pets"]  # AugSelf's order; no CIFAR100
    assert table.loc["vicreg", "CIFAR10"] == "81.0 ± 1.4 (n=2)"
    assert table.loc["vicreg", "Pets"] == "70.0 (n=1)" and table.loc["vicreg", "Food"] == "–"
    assert transfer_table(frame([])).empty


def test_floors_of_the_older_init_give_way_to_current_ones():
    def floor(value, seed, init, stage="detection"):
        r = rec("random-init", "shape", value, seed=seed, stage=stage, metric="box_AP")
        r["config"] = {"init": init} if init else {}
        return r

    # seed 2 diverged under the current init: its old number must not stand in for it
    records = [floor(7.0, s, None) for s in range(3)] + [
        floor(v, s, "x") for s, v in [(0, 4), (1, 5)]
    ]
    records.append(floor(9.0, 0, None, stage="segmentation"))  # no current floor there: kept
    agg = aggregate(frame(records)).set_index("stage")
    assert (agg.loc["detection", "mean"], agg.loc["detection", "n"]) == pytest.approx((4.5, 2))
    assert agg.loc["segmentation", "mean"] == pytest.approx(9.0)


def test_per_label_ceilings_give_way_to_a_joint_one():
    def ceiling(task, value, run, protocol, tasks=None):
        r = rec("supervised", task, value, run=run, protocol=protocol, epochs=8)
        r["config"] = {"tasks": tasks} if tasks else {}
        return r

    records = [  # per label: shape and hue networks, each scored by its head and a probe
        ceiling(t, v, f"ceiling/{t}", p)
        for t, v in (("shape", 90.0), ("hue", 99.0))
        for p in ("supervised", "linear-lbfgs")
    ]
    records += [  # one joint network of shape only (its probe's config names no tasks)
        ceiling("shape", 80.0, "ceiling/joint", "supervised", tasks=["shape"]),
        ceiling("shape", 81.0, "ceiling/joint", "linear-lbfgs"),
    ]
    records.append(ceiling("hue", 97.0, "ceiling/hue", "knn"))  # no joint knn record: kept
    agg = aggregate(frame(records)).set_index(["protocol", "task"])["mean"]
    assert agg.to_dict() == pytest.approx(
        {("supervised", "shape"): 80.0, ("linear-lbfgs", "shape"): 81.0, ("knn", "hue"): 97.0}
    )


def test_a_second_config_on_other_data_leaves_the_labels_here_alone():
    from analysis.tables import measurements

    records = pd.DataFrame(
        [
            rec("vicreg", "shape", 40.0, run="vicreg_16e_shapes_s0"),
            rec("mast", "shape", 41.0, run="mast_a_16e_shapes_s0"),
            rec("mast", "shape", 42.0, run="mast_b_16e_shapes_s0"),
            *(
                rec("vicreg", "class", v, run=r, dataset="fashion_mnist")
                for v, r in ((82.0, "vicreg_2e_fmnist_s0"), (83.0, "vicreg_8e_fmnist_s0"))
            ),
        ]
    )
    labels = measurements(records).groupby("dataset")["label"].agg(sorted)
    # one VICReg config on FactorShapes: plain; two MAST ones; two VICReg ones on Fashion-MNIST
    assert labels[UPRIGHT] == ["mast (mast_a_16e_shapes)", "mast (mast_b_16e_shapes)", "vicreg"]
    assert labels["fashion_mnist"] == ["vicreg (vicreg_2e_fmnist)", "vicreg (vicreg_8e_fmnist)"]
