"""The study driver (scripts/study.py): its plan, its resume rules and its errors; stage commands
are recorded, not run (each stage has its own tests)."""

import json
from pathlib import Path

import pytest
import yaml

from core.checkpoints import FLOOR_INIT
from core.config import load_config, to_dict
from core.records import append_record, make_record
from pretrain.config import PretrainConfig
from scripts import study

MAST = "configs/pretrain/mast_r18w16_b128_16e_shapes.yaml"
VICREG = "configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml"
NOUNC = "configs/pretrain/mast_nounc_r18w16_b128_16e_shapes.yaml"


def make_config(tmp_path: Path, **extra) -> study.StudyConfig:
    data = {
        "seeds": [0, 1],
        "methods": [VICREG, MAST, NOUNC],
        "runs": str(tmp_path / "runs"),
        "results": str(tmp_path / "results"),
        "evaluations": {
            "detection": [
                {"protocol": "embedded-frcnn"},
                {"protocol": "embedded-frcnn", "set": ["data.categories=color"], "seeds": [0]},
            ],
            "segmentation": [{"protocol": "embedded-mrcnn"}],
        },
        "sweeps": {
            "rho": {"base": MAST, "variants": {"0.5": [], "0.25": ["loss.rho=0.25"]}},
            "uncertainty": {"base": MAST, "variants": {"on": [], "off": ["method=mast_nounc"]}},
        },
        **extra,
    }
    return study.from_dict(study.StudyConfig, data)


def fake_checkpoint(run, tag, epoch=16, numerics=study.NUMERICS):
    import torch

    torch.save({"epoch": epoch, "tag": tag, "numerics": numerics}, run.ckpt)


class Recorder(study.Study):
    """A study whose stage commands are recorded instead of run."""

    def __init__(self, cfg):
        super().__init__(cfg, "python", dry_run=False, only=set(study.KINDS))
        self.commands = []

    def call(self, name, argv):
        self.commands.append(argv)


def test_plan_orders_runs_and_reuses_method_runs_for_equal_sweep_variants(tmp_path):
    cfg = make_config(tmp_path)
    names = [str(r.folder.relative_to(tmp_path / "runs")) for r in study.plan_runs(cfg, [0, 1])]
    assert names == [
        "vicreg_r18w16_b128_16e_shapes_s0",
        "mast_r18w16_b128_16e_shapes_s0",
        "mast_nounc_r18w16_b128_16e_shapes_s0",
        "sweeps/rho/0.25_s0",
        "vicreg_r18w16_b128_16e_shapes_s1",
        "mast_r18w16_b128_16e_shapes_s1",
        "mast_nounc_r18w16_b128_16e_shapes_s1",
    ]
    index = study.sweep_index(cfg)["sweeps"]
    assert index["rho"]["0.5"]["runs"] == [
        str(tmp_path / "runs" / "mast_r18w16_b128_16e_shapes_s0")
    ]
    assert index["uncertainty"]["off"]["runs"] == [
        str(tmp_path / "runs" / "mast_nounc_r18w16_b128_16e_shapes_s0")
    ]
    assert index["rho"]["0.25"]["overrides"] == ["loss.rho=0.25"]


def test_a_variant_that_became_a_method_default_keeps_its_own_trained_runs(tmp_path):
    cfg = make_config(tmp_path, seeds=[0])
    own = tmp_path / "runs" / "sweeps" / "uncertainty" / "off_s0"
    method = tmp_path / "runs" / "mast_nounc_r18w16_b128_16e_shapes_s0"

    def runs():
        return study.sweep_index(cfg)["sweeps"]["uncertainty"]["off"]["runs"]

    assert runs() == [str(method)]  # nothing trained yet: the method run
    for folder, rho in ((own, 0.5), (method, 0.25)):  # the method run holds an older default
        folder.mkdir(parents=True)
        nounc = load_config(PretrainConfig, Path(NOUNC), ["seed=0", f"loss.rho={rho}"])
        (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(nounc)))
    assert runs() == [str(own)]
    (own / "config.yaml").unlink()  # no run of its own: the method run, to be retrained
    assert runs() == [str(method)]
    # folders not kept: the ledger remembers what was trained in them
    (method / "config.yaml").unlink()
    ledger = study.Ledger(tmp_path / "results" / "study")
    for folder, rho in ((own, 0.5), (method, 0.25)):
        nounc = load_config(PretrainConfig, Path(NOUNC), ["seed=0", f"loss.rho={rho}"])
        run = study.Run(folder, NOUNC, [], 0)
        ledger.remember(run, "sha", to_dict(nounc))
    assert runs() == [str(own)]


def test_the_ledger_keeps_the_machine_that_trained_a_run(tmp_path):
    folder = tmp_path / "runs" / "mast_s0"
    folder.mkdir(parents=True)
    run = study.Run(folder, MAST, [], 0)
    ledger = study.Ledger(tmp_path / "study")
    ledger.remember(run, "sha", {})  # no run.json yet: no machine
    assert "machine" not in ledger.runs[str(folder)]
    cpu = {"cpu": "AMD EPYC", "torch_threads": 2}
    (folder / "run.json").write_text(json.dumps({"stage": "pretrain", "machine": cpu}))
    ledger.remember(run, "sha", {})
    # the folder is gone: the same checkpoint keeps its machine, a new one does not inherit it
    (folder / "run.json").unlink()
    ledger = study.Ledger(tmp_path / "study")
    ledger.remember(run, "sha", {})
    assert ledger.runs[str(folder)]["machine"] == cpu
    ledger.remember(run, "other", {})
    assert "machine" not in ledger.runs[str(folder)]
    (folder / "run.json").write_text("{not json")
    ledger.remember(run, "other", {})
    assert "machine" not in ledger.runs[str(folder)]


def test_a_typo_in_a_sweep_or_method_stops_before_any_work(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "methods": [MAST],
                "runs": str(tmp_path / "runs"),
                "results": str(tmp_path / "results"),
                "sweeps": {"rho": {"variants": {"bad": ["loss.rhoo=0.1"]}}},
            }
        )
    )
    with pytest.raises(SystemExit, match="config error: .*rhoo"):
        study.main(["--config", str(config), "--dry-run"])
    config.write_text(yaml.safe_dump({"methodz": [MAST]}))
    with pytest.raises(SystemExit, match="config error: .*methodz"):
        study.main(["--config", str(config), "--dry-run"])
    assert not (tmp_path / "runs").exists()


def test_a_run_gets_pretraining_and_the_evaluations_of_its_seed(tmp_path):
    cfg = make_config(tmp_path)
    recorder = Recorder(cfg)
    run = study.plan_runs(cfg, [0, 1])[1]  # mast, seed 0
    run.folder.mkdir(parents=True)
    fake_checkpoint(run, "mast s0")  # the pretrain step is recorded, not run: pretend it wrote this
    recorder.do_run(run)
    modules = [argv[2] for argv in recorder.commands]
    assert modules == [
        "pretrain",
        "downstream.classification",
        "downstream.detection",
        "downstream.detection",
        "downstream.detection",
    ]
    assert recorder.commands[0][-2:] == ["--set", "seed=0"]
    assert (
        "data.categories=color" in recorder.commands[3] and "embedded-mrcnn" in recorder.commands[4]
    )
    seed1 = study.plan_runs(cfg, [0, 1])[5]
    seed1.folder.mkdir(parents=True)
    fake_checkpoint(seed1, "mast s1")
    recorder.commands.clear()
    recorder.do_run(seed1)
    # colour: seed 0 only
    assert not any("data.categories=color" in argv for argv in recorder.commands)
    ref = {"path": str(seed1.ckpt), "sha256": study.sha256_file(seed1.ckpt)}
    append_record(
        tmp_path / "results" / "records" / "detection.jsonl",
        make_record(
            stage="detection",
            method="mast",
            arch="resnet18w16",
            pretrain_ckpt=ref,
            dataset="factorshapes/det",
            task="shape",
            protocol="embedded-frcnn",
            seed=0,
            metric="box_AP",
            value=7.0,
        ),
    )
    recorder.commands.clear()
    # its shape detection is recorded: not asked again; segmentation still is
    recorder.do_run(seed1)
    assert [argv[2] for argv in recorder.commands] == [
        "pretrain",
        "downstream.classification",
        "downstream.detection",
    ]
    assert "embedded-mrcnn" in recorder.commands[2]
    sweep = study.plan_runs(cfg, [0])[3]
    sweep.folder.mkdir(parents=True)
    fake_checkpoint(sweep, "sweep")
    recorder.commands.clear()
    recorder.do_run(sweep)
    assert [argv[2] for argv in recorder.commands] == ["pretrain", "downstream.classification"]
    assert str(tmp_path / "results" / "records" / "sweeps.jsonl") in recorder.commands[1]


def test_finished_run_without_checkpoint_is_skipped_only_when_records_and_config_match(tmp_path):
    cfg = make_config(tmp_path)
    run = study.plan_runs(cfg, [0])[3]  # the rho sweep run: classification only
    recorder = Recorder(cfg)
    recorder.ledger.remember(run, "abc123", study.resolved_config(run))
    ref = {"path": str(run.ckpt), "sha256": "abc123"}
    append_record(
        tmp_path / "results" / "records" / "sweeps.jsonl",
        make_record(
            stage="classification",
            method="mast",
            arch="resnet18w16",
            pretrain_ckpt=ref,
            dataset="factorshapes/cls-upright",
            task="shape",
            protocol="linear-lbfgs",
            seed=0,
            metric="top1",
            value=30.0,
        ),
    )
    recorder.do_run(run)
    assert recorder.commands == []
    recorder.ledger.runs[str(run.folder)]["resolved"]["loss"]["rho"] = (
        0.3  # trained with another config
    )
    recorder.do_run(run)
    assert recorder.commands[0][2] == "pretrain"


def test_a_run_folder_with_another_config_is_moved_aside_not_deleted(tmp_path):
    cfg = make_config(tmp_path)
    run = study.plan_runs(cfg, [0])[1]
    run.folder.mkdir(parents=True)
    old = study.resolved_config(run)
    old["loss"]["lam"] = 5.0
    (run.folder / "config.yaml").write_text(yaml.safe_dump(old))
    (run.folder / "last.pt").write_bytes(b"old weights")
    Recorder(cfg).pretrain(
        run, study.config_hash(study.resolved_config(run)), study.resolved_config(run)
    )
    moved = list((tmp_path / "runs" / "stale").glob("mast_r18w16_b128_16e_shapes_s0-*"))
    assert len(moved) == 1 and (moved[0] / "last.pt").read_bytes() == b"old weights"
    assert not run.folder.exists()


def test_a_checkpoint_of_older_numerics_is_set_aside_and_retrained(tmp_path):
    cfg = make_config(tmp_path)
    run = study.plan_runs(cfg, [0])[1]
    run.folder.mkdir(parents=True)
    recorder = Recorder(cfg)
    # no checkpoint yet: nothing moved
    recorder.pretrain(
        run, study.config_hash(study.resolved_config(run)), study.resolved_config(run)
    )
    fake_checkpoint(run, "current")
    recorder.pretrain(
        run, study.config_hash(study.resolved_config(run)), study.resolved_config(run)
    )
    assert run.folder.exists() and len(recorder.commands) == 2
    fake_checkpoint(run, "old arithmetic", numerics=1)
    recorder.pretrain(
        run, study.config_hash(study.resolved_config(run)), study.resolved_config(run)
    )
    moved = list((tmp_path / "runs" / "stale").glob("mast_r18w16_b128_16e_shapes_s0-*"))
    assert len(moved) == 1 and not run.folder.exists() and recorder.commands[-1][2] == "pretrain"
    # a run whose checkpoint is gone is skipped only if its records came from today's numerics
    sweep = study.plan_runs(cfg, [0])[3]
    recorder.ledger.remember(sweep, "abc123", study.resolved_config(sweep), numerics=1)
    append_record(
        tmp_path / "results" / "records" / "sweeps.jsonl",
        make_record(
            stage="classification",
            method="mast",
            arch="resnet18w16",
            pretrain_ckpt={"path": str(sweep.ckpt), "sha256": "abc123"},
            dataset="factorshapes/cls-upright",
            task="shape",
            protocol="linear-lbfgs",
            seed=0,
            metric="top1",
            value=30.0,
        ),
    )
    recorder.commands.clear()
    recorder.do_run(sweep)
    assert recorder.commands[0][2] == "pretrain"


def test_config_hash_ignores_keys_added_since_with_their_defaults(tmp_path):
    run = study.plan_runs(make_config(tmp_path), [0])[1]
    resolved = study.resolved_config(run)
    older = json.loads(json.dumps(resolved))
    assert older["data"]["verify_images"] is False
    del older["data"]["verify_images"]  # as if the schema gained this key later, at its default
    assert study.config_hash(older) == study.config_hash(resolved)
    older["loss"]["rho"] = 0.25
    assert study.config_hash(older) != study.config_hash(resolved)
    assert study.config_hash({"no_such_key": 1}) == "stale"


def test_an_unfinished_checkpoint_gets_no_evaluations(tmp_path):
    cfg = make_config(tmp_path)
    run = study.plan_runs(cfg, [0])[1]
    run.folder.mkdir(parents=True)
    # pretraining left out with --only: an epoch checkpoint of a killed run
    fake_checkpoint(run, "half", epoch=3)
    recorder = Recorder(cfg)
    recorder.only = {"classification", "detection", "segmentation"}
    recorder.do_run(run)
    assert recorder.commands == [] and str(run.folder) not in recorder.ledger.runs


def test_has_records_sees_records_appended_after_a_check(tmp_path):
    records = tmp_path / "detection.jsonl"
    ref = {"path": "a.pt", "sha256": "abc"}

    def add(task):
        append_record(
            records,
            make_record(
                stage="detection",
                method="mast",
                arch="resnet18w16",
                pretrain_ckpt=ref,
                dataset="factorshapes/det",
                task=task,
                protocol="embedded-frcnn",
                seed=0,
                metric="box_AP",
                value=7.0,
            ),
        )

    assert not study.has_records(records, "abc")
    add("shape")
    assert study.has_records(records, "abc", {"shape"}) and not study.has_records(
        records, "abc", {"color"}
    )
    add("color")  # the file changed since the last check: read again
    assert study.has_records(records, "abc", {"shape", "color"})
    assert not study.has_records(records, "other")


def test_estimates_use_a_steps_own_time_else_the_median_of_its_kind_that_did_work(tmp_path):
    ledger = study.Ledger(tmp_path)
    for step, seconds in [
        ("pretrain vicreg_s0", 300.0),
        ("pretrain mast_s0", 400.0),
        ("pretrain mast_s0", 5.0),
        ("pretrain sweeps/rho/0.25_s0", 500.0),
        ("pretrain mast_factorized_s0", 1000.0),
        ("detection embedded-frcnn mast_s0", 240.0),
        ("segmentation embedded-mrcnn x_s0", 330.0),
    ]:
        ledger.time(step, seconds, True)
    # its latest time: the run was finished, it resumed at once
    assert ledger.estimate("pretrain mast_s0") == 5.0
    # median of the pair-mode pretraining that did work
    assert ledger.estimate("pretrain mast_s1") == 400.0
    assert ledger.estimate("pretrain mast_factorized_s1") == 1000.0
    assert ledger.estimate("detection embedded-frcnn data.categories=color vicreg_s1") == 240.0
    assert ledger.estimate("segmentation embedded-mrcnn vicreg_s1") == 330.0
    assert (
        ledger.estimate("classification vicreg_s1") is None and ledger.estimate("analysis") is None
    )
    assert study.step_kind("detection embedded-frcnn data.categories=color x") == (
        "detection",
        "embedded-frcnn",
    )


def test_dry_run_counts_the_evaluations_of_runs_not_trained_yet(tmp_path, capsys):
    cfg = make_config(tmp_path, sweeps={})
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study.to_dict(cfg)))
    ledger = study.Ledger(tmp_path / "results" / "study")
    for step, seconds in [
        ("pretrain vicreg_r18w16_b128_16e_shapes_s9", 360.0),
        ("classification vicreg_r18w16_b128_16e_shapes_s9", 36.0),
        ("detection embedded-frcnn vicreg_r18w16_b128_16e_shapes_s9", 360.0),
        ("segmentation embedded-mrcnn vicreg_r18w16_b128_16e_shapes_s9", 360.0),
    ]:
        ledger.time(step, seconds, True)
    assert (
        study.main(
            [
                "--config",
                str(config),
                "--dry-run",
                "--seeds",
                "1",
                "--only",
                "pretrain",
                "classification",
                "detection",
                "segmentation",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # Seed 1 of 3 methods, none trained: 3 x (pretrain 360 + classification 36 + detection 360 +
    # segmentation
    # 360) = 3,348 s = 0.93 h; the colour detection file is seed 0's only.
    assert "then 3 evaluation step(s) after pretraining" in out
    assert "dry run: about 0.9 h of steps left" in out and "not counted" not in out
    assert not (tmp_path / "runs").exists()  # a dry run trains nothing


def test_floors_already_recorded_are_not_asked_again(tmp_path, capsys):
    cfg = make_config(tmp_path)
    recorder = Recorder(cfg)
    records = tmp_path / "results" / "records" / "detection.jsonl"
    for task, seed, split, init in [
        ("shape", 0, "det", FLOOR_INIT),
        ("color", 0, "det", FLOOR_INIT),
        ("shape", 1, "det-upright", FLOOR_INIT),
        ("shape", 1, "det", None),  # an older floor, initialised otherwise: asked again
    ]:
        append_record(
            records,
            make_record(
                stage="detection",
                method="random-init",
                arch="resnet18w16",
                pretrain_ckpt=None,
                dataset=f"factorshapes/{split}",
                task=task,
                protocol="embedded-frcnn",
                seed=seed,
                metric="box_AP",
                value=6.0,
                config={"init": init} if init else {},
            ),
        )
    recorder.floors([0, 1])
    floors = [
        (argv[argv.index("--protocol") + 1], argv[argv.index("--seed") + 1])
        for argv in recorder.commands
        if argv[2] == "downstream.detection"
    ]
    # Seed 1's shape floor on the det split is not recorded (the det-upright one is another data
    # set).
    assert floors == [("embedded-frcnn", "1"), ("embedded-mrcnn", "0"), ("embedded-mrcnn", "1")]
    out = capsys.readouterr().out
    assert "detection embedded-frcnn data.categories=color random-init_s0: recorded, skipped" in out
    cfg.evaluations.detection = [
        study.DetectionEval("embedded-frcnn", ["data.split=det-upright"], [1])
    ]
    cfg.evaluations.segmentation = []
    recorder.commands.clear()
    recorder.floors([1])
    # det-upright: recorded
    assert [argv[2] for argv in recorder.commands] == ["downstream.classification"]


def test_a_finished_current_run_with_every_record_lists_no_step(tmp_path):
    cfg = make_config(tmp_path)
    run = study.plan_runs(cfg, [0])[3]  # the rho sweep run: classification only
    run.folder.mkdir(parents=True)
    (run.folder / "config.yaml").write_text(yaml.safe_dump(study.resolved_config(run)))
    fake_checkpoint(run, "rho 0.25")
    recorder = Recorder(cfg)
    recorder.do_run(run)
    # no record yet
    assert [argv[2] for argv in recorder.commands] == [
        "pretrain",
        "downstream.classification",
    ]
    ref = {"path": str(run.ckpt), "sha256": study.sha256_file(run.ckpt)}
    append_record(
        tmp_path / "results" / "records" / "sweeps.jsonl",
        make_record(
            stage="classification",
            method="mast",
            arch="resnet18w16",
            pretrain_ckpt=ref,
            dataset="factorshapes/cls-upright",
            task="shape",
            protocol="linear-lbfgs",
            seed=0,
            metric="top1",
            value=30.0,
        ),
    )
    recorder.commands.clear()
    recorder.do_run(run)
    assert (
        recorder.commands == []
        and recorder.ledger.runs[str(run.folder)]["ckpt_sha256"] == ref["sha256"]
    )
    # unfinished (and another digest): pretraining resumes
    fake_checkpoint(run, "rho 0.25", epoch=7)
    recorder.do_run(run)
    assert recorder.commands[0][2] == "pretrain"


def test_a_numerics_change_makes_stale_only_the_runs_it_changes(tmp_path):
    """Version 3 detached the uncertainty head's input: a vicreg or mast_nounc run of version 2 is
    current, a mast run (with the head) is stale and retrained."""
    cfg = make_config(tmp_path)
    runs = {r.folder.name.rsplit("_s", 1)[0]: r for r in study.plan_runs(cfg, [0]) if not r.sweep}
    recorder = Recorder(cfg)
    for name, stale in [
        ("vicreg_r18w16_b128_16e_shapes", False),
        ("mast_r18w16_b128_16e_shapes", True),
    ]:
        run = runs[name]
        run.folder.mkdir(parents=True, exist_ok=True)
        fake_checkpoint(run, "version 2", numerics=2)
        recorder.pretrain(
            run, study.config_hash(study.resolved_config(run)), study.resolved_config(run)
        )
        assert run.folder.exists() != stale
    assert study.is_current(2, {"method": "mast_nounc", "loss": {}})
    assert not study.is_current(2, {"method": "mast_nounc", "loss": {"uncertainty": True}})
    assert not study.is_current(1, {"method": "vicreg", "loss": {}})


@pytest.mark.parametrize("method", ["vicreg", "mast", "mast_nounc", "mast_fixed"])
@pytest.mark.parametrize("flag", [None, True, False])
def test_numerics_head_rule_is_the_configs_own(method, flag):
    """core.numerics.uses_head reads a resolved config as a dict; it must agree with the config's
    property."""
    from core.numerics import uses_head
    from pretrain.config import PretrainConfig

    overrides = [f"method={method}"] + (
        [] if flag is None else [f"loss.uncertainty={str(flag).lower()}"]
    )
    cfg = load_config(PretrainConfig, None, overrides)
    assert uses_head(to_dict(cfg)) == cfg.uses_uncertainty


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("target", [0.0, 5.0])
def test_numerics_4_changed_only_runs_with_grouped_target_heads(grouped, target):
    """Version 4 (grouped heads optimised as separate ones) makes a version-3 run stale only where
    the config trains grouped heads."""
    from core.numerics import NUMERICS, is_current, uses_grouped_heads

    overrides = ["method=mast_nounc", "loss.combine=and", "views.resample=all"]
    overrides += [f"loss.target_weight={target}", f"loss.target_grouped={str(grouped).lower()}"]
    resolved = to_dict(load_config(PretrainConfig, None, overrides))
    trains_grouped = grouped and target > 0
    assert uses_grouped_heads(resolved) == trains_grouped
    assert is_current(3, resolved) == (not trains_grouped) and is_current(NUMERICS, resolved)
    default = (
        Path(__file__).parents[1] / "configs/pretrain/mast_and_target_r18w16_b128_16e_shapes.yaml"
    )
    assert uses_grouped_heads(to_dict(load_config(PretrainConfig, default)))  # make all's MAST
