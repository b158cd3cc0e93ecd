"""The classification stage end to end on tiny FactorShapes parts: records, no duplicates, the
feature cache, floor and ceiling, linear-sgd and finetune, the CLI."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.backbones import backbone_state_dict, build_backbone
from core.checkpoints import FLOOR_INIT, FORMAT, load_backbone, random_backbone, save_checkpoint
from core.config import DataConfig
from core.records import read_records
from downstream.classification.config import ClassificationConfig, FinetuneConfig, SgdConfig
from downstream.classification.evaluate import Evaluator
from downstream.classification.tasks import balanced_subset, held_out, resolve_tasks, split_indices
from downstream.classification.train import LabelView, evaluate, fit

TASKS = ["cls-upright/bg", "cls-rot/orient"]


def config(data, tmp_path, **changes) -> ClassificationConfig:
    cfg = ClassificationConfig(
        data=data, tasks=list(TASKS), cache=str(tmp_path / "cache"), device="cpu", batch_size=64
    )
    cfg.lbfgs.l2_grid, cfg.lbfgs.max_iter = [1e-3, 1e-1], 50
    return dataclasses.replace(cfg, **changes)


def suite_checkpoint(path, seed=0, width=8):
    torch.manual_seed(seed)
    model = build_backbone("resnet18", width)
    save_checkpoint(
        {
            "format": FORMAT,
            "backbone": backbone_state_dict(model),
            "arch": "resnet18",
            "base_width": width,
            "method": "mast",
            "epoch": 2,
            "config": {"seed": seed},
        },
        path,
    )
    return path


def test_records_cache_and_no_duplicates(tiny_shapes, tmp_path):
    records = tmp_path / "records.jsonl"
    ckpt = suite_checkpoint(tmp_path / "last.pt", seed=4)
    evaluator = Evaluator(config(tiny_shapes, tmp_path), records, tmp_path / "log")
    assert evaluator.evaluate_backbone(load_backbone(ckpt)) == 4
    frame = read_records(records)
    assert sorted(zip(frame.task, frame.protocol)) == [
        ("bg", "knn"),
        ("bg", "linear-lbfgs"),
        ("orient", "knn"),
        ("orient", "linear-lbfgs"),
    ]
    assert set(frame.dataset) == {"factorshapes/cls-upright", "factorshapes/cls-rot"}
    assert (
        set(frame.seed) == {4}
        and set(frame.method) == {"mast"}
        and set(frame.arch) == {"resnet18w8"}
    )
    assert all(ref["sha256"] and ref["path"].endswith("last.pt") for ref in frame.pretrain_ckpt)
    assert frame.value.between(0, 100).all() and set(frame.n_test) == {96}
    # 3 parts of 2 splits, extracted once
    assert evaluator.cache.misses == 6 and evaluator.cache.hits == 0

    again = Evaluator(config(tiny_shapes, tmp_path), records)
    assert (
        again.evaluate_backbone(load_backbone(ckpt)) == 0
        and again.cache.misses == again.cache.hits == 0
    )
    assert len(read_records(records)) == 4

    new_k = config(tiny_shapes, tmp_path)
    new_k.knn.k = 5
    third = Evaluator(new_k, records)
    assert third.evaluate_backbone(load_backbone(ckpt)) == 2  # the k=5 knn records only
    assert third.cache.misses == 0 and third.cache.hits == 6  # from the feature cache
    logged = [
        json.loads(line) for line in (tmp_path / "log" / "log.jsonl").read_text().splitlines()
    ]
    assert sum(row["event"] == "record" for row in logged) == 4


def test_same_seed_same_numbers_and_floor_beats_nothing(tiny_shapes, tmp_path):
    first = Evaluator(config(tiny_shapes, tmp_path), tmp_path / "a.jsonl")
    first.floor("resnet18", 8)
    second = Evaluator(config(tiny_shapes, tmp_path / "other"), tmp_path / "b.jsonl")
    second.floor("resnet18", 8)
    a, b = read_records(tmp_path / "a.jsonl"), read_records(tmp_path / "b.jsonl")
    assert list(a.value) == list(b.value) and set(a.method) == {"random-init"}
    assert a.pretrain_ckpt.isna().all()
    assert all(c["init"] == FLOOR_INIT for c in a.config)  # a rerun with another init redoes it


def test_the_random_floor_has_its_residual_branches_on():
    # the SSL init (each block's last BN at zero) leaves a random network nearly constant over
    # images (Fashion-MNIST floor 21.7%, issue 24); torchvision's init does not
    images = torch.rand(64, 3, 32, 32)
    with torch.no_grad():
        features = random_backbone("resnet18", 8, 0).model(images)
        zeroed = build_backbone("resnet18", 8).eval()(images)
    assert features.std(0).mean() > 2 * zeroed.std(0).mean()  # 2.9 x on these images


def test_changed_weights_never_reuse_cached_features(tiny_shapes, tmp_path):
    records = tmp_path / "r.jsonl"
    cfg = config(tiny_shapes, tmp_path, protocols=["knn"], tasks=["cls-upright/bg"])
    Evaluator(cfg, records).evaluate_backbone(
        load_backbone(suite_checkpoint(tmp_path / "x.pt", seed=1))
    )
    evaluator = Evaluator(cfg, records)
    # same path, new weights
    evaluator.evaluate_backbone(load_backbone(suite_checkpoint(tmp_path / "x.pt", seed=2)))
    assert (
        evaluator.cache.hits == 0
        and evaluator.cache.misses == 3
        and len(read_records(records)) == 2
    )


def test_ceiling_is_trained_once(tiny_shapes, tmp_path):
    cfg = config(tiny_shapes, tmp_path, tasks=["cls-upright/bg"])
    cfg.ceiling.epochs, cfg.ceiling.batch_size = 2, 32
    evaluator = Evaluator(cfg, tmp_path / "r.jsonl")
    assert evaluator.ceiling("resnet18", 8, tmp_path / "ceiling") == 3
    frame = read_records(tmp_path / "r.jsonl")
    assert sorted(frame.protocol) == ["knn", "linear-lbfgs", "supervised"] and set(
        frame.method
    ) == {"supervised"}
    (ckpt,) = (tmp_path / "ceiling").glob("*/last.pt")
    stamp = ckpt.stat().st_mtime_ns
    assert Evaluator(cfg, tmp_path / "r.jsonl").ceiling("resnet18", 8, tmp_path / "ceiling") == 0
    assert ckpt.stat().st_mtime_ns == stamp
    # a fresh clone: the records are committed, the run folder is not; nothing is retrained
    ckpt.unlink()
    assert Evaluator(cfg, tmp_path / "r.jsonl").ceiling("resnet18", 8, tmp_path / "ceiling") == 0
    assert not ckpt.exists()
    # another protocol asked of it: that needs the network, so it is trained again
    cfg.protocols = ["linear-lbfgs", "knn", "linear-sgd"]
    cfg.linear_sgd = SgdConfig(epochs=1, batch_size=32, lr=0.1, crop_scale=(0.5, 1.0))
    assert Evaluator(cfg, tmp_path / "r.jsonl").ceiling("resnet18", 8, tmp_path / "ceiling") == 1
    assert ckpt.exists()


def test_joint_ceiling_is_one_network_per_image_part_with_a_head_per_task(tiny_shapes, tmp_path):
    tasks = ["cls-upright/bg", "cls-upright/hue", "cls-rot/orient"]
    cfg = config(tiny_shapes, tmp_path, tasks=tasks, protocols=["knn"])
    cfg.ceiling.epochs, cfg.ceiling.batch_size = 1, 32
    assert cfg.ceiling.joint  # the default
    assert Evaluator(cfg, tmp_path / "r.jsonl").ceiling("resnet18", 8, tmp_path / "c") == 6
    folders = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(folders) == 2 and all("_joint_" in name for name in folders)
    frame = read_records(tmp_path / "r.jsonl")
    supervised = frame[frame.protocol == "supervised"].set_index("task")
    assert sorted(supervised.index) == ["bg", "hue", "orient"]
    assert supervised.loc["bg", "config"]["tasks"] == ["bg", "hue"]
    assert supervised.loc["orient", "config"]["tasks"] == ["orient"]
    # the recorded top-1 is the task's own head on the test part
    (upright,) = (tmp_path / "c").glob("*cls-upright*/last.pt")
    stored = torch.load(upright, weights_only=True)
    assert set(stored["test_top1"]) == {"bg", "hue"}
    assert supervised.loc["hue", "value"] == stored["test_top1"]["hue"]
    model = build_backbone("resnet18", 8)
    model.load_state_dict(stored["backbone"])
    head = torch.nn.Linear(model.feature_dim, 4)
    head.load_state_dict(
        {
            k.removeprefix("heads.0."): v
            for k, v in stored["head"].items()
            if k.startswith("heads.0.")
        }
    )
    (bg,) = resolve_tasks(cfg.data, ["cls-upright/bg"])
    evaluator = Evaluator(cfg, tmp_path / "r.jsonl")
    _, _, test = evaluator._image_parts(bg)
    assert 100 * evaluate(model, head, LabelView(test, "bg"), 64) == pytest.approx(
        supervised.loc["bg", "value"]
    )
    # one network per label: three folders, and records without the joint keys
    cfg.ceiling.joint = False
    assert Evaluator(cfg, tmp_path / "r2.jsonl").ceiling("resnet18", 8, tmp_path / "c2") == 6
    assert len(list((tmp_path / "c2").iterdir())) == 3
    per_label = read_records(tmp_path / "r2.jsonl")
    assert not any("joint" in c or "tasks" in c for c in per_label.config)


def test_linear_sgd_keeps_the_backbone_and_finetune_writes_subsets(tiny_shapes, tmp_path):
    cfg = config(
        tiny_shapes,
        tmp_path,
        tasks=["cls-upright/bg"],
        protocols=["linear-sgd", "finetune"],
        linear_sgd=SgdConfig(epochs=1, batch_size=32, lr=0.1, crop_scale=(0.5, 1.0)),
        finetune=FinetuneConfig(
            epochs=1,
            batch_size=16,
            fractions=[0.25, 0.5],
            backbone_lr=[0.01, 0.01],
            head_lr=[0.1, 0.1],
            weight_decay=0.0,
            crop_scale=None,
            flip=False,
        ),
    )
    backbone = random_backbone("resnet18", 8, 0)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    assert Evaluator(cfg, tmp_path / "r.jsonl").evaluate_backbone(backbone) == 3
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # evaluations work on copies
    frame = read_records(tmp_path / "r.jsonl").set_index("protocol")
    assert set(frame.index) == {"linear-sgd", "finetune-25pct", "finetune-50pct"}
    assert (
        frame.loc["finetune-25pct", "n_train"] == 24
        and frame.loc["finetune-50pct", "n_train"] == 48
    )
    subsets = sorted((tmp_path / "subsets").glob("*.json"))
    assert len(subsets) == 2
    stored = json.loads(subsets[0].read_text())
    assert stored["sha256"] == frame.loc["finetune-25pct", "config"]["subset_sha256"]


def test_fit_frozen_vs_trained_backbone():
    data = [(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), i % 2) for i in range(16)]
    for train_backbone in (False, True):
        torch.manual_seed(0)
        backbone, head = build_backbone("resnet18", 8), torch.nn.Linear(64, 2)
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
        losses = fit(
            backbone,
            head,
            data,
            epochs=3,
            batch_size=8,
            groups=[(list(backbone.parameters()) + list(head.parameters()), 0.05)],
            train_backbone=train_backbone,
        )
        changed = [k for k, v in backbone.state_dict().items() if not torch.equal(v, state[k])]
        assert bool(changed) == train_backbone and len(losses) == 3


def test_subsets_are_balanced_and_fixed_per_seed():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    subset = balanced_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[subset]).tolist() == [10, 5, 3, 2]
    assert np.array_equal(subset, balanced_subset(labels, 0.1, seed=0))
    assert not np.array_equal(subset, balanced_subset(labels, 0.1, seed=1))
    assert np.bincount(labels[balanced_subset(labels, 0.01, seed=0)]).tolist() == [1, 1, 1, 1]


def test_parts_without_validation_hold_out_a_fixed_fraction(tmp_path):
    for part in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / part / cls).mkdir(parents=True)
    parts = split_indices(DataConfig(dataset="folder", root=str(tmp_path)), 50, 0.1)
    assert parts["test"] == ("val", None) and parts["val"][0] == parts["train"][0] == "train"
    assert len(parts["val"][1]) == 5 and not set(parts["val"][1]) & set(parts["train"][1])
    assert np.array_equal(parts["val"][1], held_out(50, 0.1))
    assert split_indices(DataConfig(), 10, 0.5)["val"] == ("val", None)


def test_unknown_tasks_are_one_line_errors(tiny_shapes):
    from core.data.base import DataError

    with pytest.raises(DataError, match="no label 'colour' in FactorShapes cls-upright"):
        resolve_tasks(tiny_shapes, ["cls-upright/colour"])
    with pytest.raises(DataError, match="needs split cls-upright or cls-rot"):
        resolve_tasks(tiny_shapes, ["det/count"])
    assert [t.label for t in resolve_tasks(tiny_shapes, [])] == [
        "shape",
        "hue",
        "chiral",
        "texture",
        "size",
        "pos",
        "bg",
        "light",
        "orient",
    ]


def test_cli_evaluates_a_checkpoint_then_adds_nothing(tiny_shapes, tmp_path, repo_root):
    ckpt = suite_checkpoint(tmp_path / "run" / "last.pt")
    command = [
        sys.executable,
        "-m",
        "downstream.classification",
        "--ckpt",
        str(ckpt),
        "--records",
        str(tmp_path / "r.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--set",
        f"data.root={tiny_shapes.root}",
        "data.image_size=32",
        "data.n=96",
        "tasks=[cls-upright/bg]",
        f"cache={tmp_path / 'cache'}",
        "lbfgs.l2_grid=[0.01]",
        "device=cpu",
    ]
    first = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert (
        "2 new records" in first.stdout and "0 reused from the cache, 3 extracted" in first.stdout
    )
    second = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert "0 new records" in second.stdout and len(read_records(tmp_path / "r.jsonl")) == 2
    assert (tmp_path / "out" / "config.yaml").is_file()


def write_colour_cifar(root, per_batch=24):
    """A CIFAR-10 python layout whose 4 classes are 4 colours (plus noise): learnable from any
    features."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]])
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 4, per_batch)
        x = colours[labels][:, :, None, None] + rng.integers(-25, 25, (per_batch, 3, 32, 32))
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {
                    b"data": np.clip(x, 0, 255).astype(np.uint8).reshape(per_batch, -1),
                    b"labels": labels.tolist(),
                },
                handle,
            )


def test_data_set_without_validation_part(tmp_path):
    write_colour_cifar(tmp_path)
    data = DataConfig(dataset="cifar10", root=str(tmp_path), image_size=32, num_workers=0)
    cfg = config(data, tmp_path, tasks=[])
    assert (
        Evaluator(cfg, tmp_path / "r.jsonl").evaluate_backbone(random_backbone("resnet18", 8, 0))
        == 2
    )
    frame = read_records(tmp_path / "r.jsonl")
    assert set(frame.dataset) == {"cifar10"} and set(frame.task) == {"class"}
    # 108 train + 12 held out, all refit
    assert set(frame.n_train) == {120} and set(frame.n_test) == {24}
    assert (frame.value > 90).all()
