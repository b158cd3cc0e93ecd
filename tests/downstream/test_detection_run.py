"""Each detection protocol card builds and runs 2 training iterations plus evaluation on a tiny data
set written here (COCO layout; VOCdevkit layout for the VOC card); with a pretrained backbone the
hand-off check runs before training."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from downstream.detection.__main__ import data_tag, run_folder
from downstream.detection.runner import data_parts, load_card, run
from tests.downstream.test_handoff import suite_file


def tiny_coco(root, n=4, size=96):
    """n images with 1-2 coloured squares each; categories by colour; polygons as masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        pixels = np.full((size, size, 3), 40, np.uint8)
        for _ in range(1 + i % 2):
            x, y, w = int(rng.integers(5, 50)), int(rng.integers(5, 50)), int(rng.integers(20, 40))
            category = int(rng.integers(2))
            pixels[y : y + w, x : x + w] = (220, 40, 40) if category == 0 else (40, 220, 40)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category + 1,
                    "bbox": [x, y, w, w],
                    "area": w * w,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + w, x, y + w]],
                }
            )
        Image.fromarray(pixels).save(root / "images" / f"{i:06d}.png")
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
    ann = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}],
    }
    (root / "ann.json").write_text(json.dumps(ann))
    part = {
        "kind": "coco",
        "img": str(root / "images"),
        "ann": str(root / "ann.json"),
        "classes": ("red", "green"),
    }
    return {"train": part, "val": part}


@pytest.mark.parametrize("protocol", ["embedded-frcnn", "embedded-mrcnn"])
def test_two_iterations_and_evaluation(protocol, tmp_path):
    parts = tiny_coco(tmp_path / "coco")
    ckpt, _ = suite_file(tmp_path)
    card = load_card(
        protocol,
        {
            "max_iters": 2,
            "warmup_iters": 1,
            "milestones": [1],
            "batch_size": 2,
            "image_scale": (96, 96),
        },
    )
    metrics = run(card, parts, ckpt, "resnet18", 16, tmp_path / "work", seed=0)
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75"} <= set(metrics)
    assert ("coco/segm_mAP" in metrics) == (protocol == "embedded-mrcnn")
    assert all(-1 <= value <= 1 for value in metrics.values())
    assert (tmp_path / "work" / "backbone.pth").is_file()
    logs = "".join(p.read_text() for p in (tmp_path / "work").rglob("*.log"))
    assert "hand-off check: 100 ResNet tensors equal" in logs


def tiny_vocdevkit(root, n=4, size=96):
    """VOC2007 and VOC2012 folders with n JPEG images each, 1-2 boxes of VOC classes, trainval and
    test sets."""
    rng = np.random.default_rng(1)
    for year in ("VOC2007", "VOC2012"):
        for sub in ("ImageSets/Main", "Annotations", "JPEGImages"):
            (root / year / sub).mkdir(parents=True)
        ids = [f"{year[-4:]}_{i:06d}" for i in range(n)]
        for i, image_id in enumerate(ids):
            pixels = np.full((size, size, 3), 30, np.uint8)
            objects = []
            for _ in range(1 + i % 2):
                x, y, w = (
                    int(rng.integers(5, 50)),
                    int(rng.integers(5, 50)),
                    int(rng.integers(20, 40)),
                )
                name = ("cat", "dog")[int(rng.integers(2))]
                pixels[y : y + w, x : x + w] = (200, 60, 60) if name == "cat" else (60, 200, 60)
                objects.append(
                    f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                    f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin>"
                    f"<xmax>{x + w}</xmax><ymax>{y + w}</ymax></bndbox></object>"
                )
            Image.fromarray(pixels).save(root / year / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (root / year / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><size><width>{size}</width><height>{size}</height><depth>3</depth></size>"
                + "".join(objects)
                + "</annotation>"
            )
        for image_set in ("trainval", "test"):
            (root / year / "ImageSets" / "Main" / f"{image_set}.txt").write_text(
                "\n".join(ids) + "\n"
            )
    return root


TINY_SCHEDULE = {
    "max_iters": 2,
    "warmup_iters": 1,
    "milestones": [1],
    "batch_size": 2,
    "image_scale": (96, 96),
    "num_workers": 0,
}


@pytest.mark.parametrize("protocol", ["coco-mrcnn-fpn-1x", "coco-mrcnn-c4-1x"])
def test_coco_cards_run_on_a_coco_folder(protocol, tmp_path):
    tiny = tiny_coco(tmp_path / "coco" / "images_src")
    root = tmp_path / "coco"
    overrides = {
        **TINY_SCHEDULE,
        "data.root": str(root),
        "data.train": {"img": "images_src/images", "ann": "images_src/ann.json"},
        "data.val": {"img": "images_src/images", "ann": "images_src/ann.json"},
    }
    card = load_card(protocol, overrides)
    assert (
        card.norm == "SyncBN"
        and card.max_iters == 2
        and card.head == ("c4" if "c4" in protocol else "fpn")
    )
    parts = data_parts(card)
    assert parts["train"]["classes"] == tiny["train"]["classes"]
    ckpt, _ = suite_file(tmp_path)
    metrics = run(card, parts, ckpt, "resnet18", 16, tmp_path / "work", seed=0)
    assert {"coco/bbox_mAP", "coco/segm_mAP", "coco/segm_mAP_75"} <= set(metrics)
    logs = "".join(p.read_text() for p in (tmp_path / "work").rglob("*.log"))
    # C4: layer4 lives in the RoI head, still checked
    assert "hand-off check: 100 ResNet tensors equal" in logs


def test_voc_card_runs_on_a_vocdevkit_folder(tmp_path):
    root = tiny_vocdevkit(tmp_path / "VOCdevkit")
    card = load_card(
        "voc0712-frcnn-c4-24k",
        {**TINY_SCHEDULE, "data.root": str(root), "train_scales": [(96, 80), (96, 96)]},
    )
    parts = data_parts(card)
    assert parts["train"]["sets"] == [
        "VOC2007/ImageSets/Main/trainval.txt",
        "VOC2012/ImageSets/Main/trainval.txt",
    ]
    ckpt, _ = suite_file(tmp_path)
    metrics = run(card, parts, ckpt, "resnet18", 16, tmp_path / "work", seed=0)
    assert {"pascal_voc/mAP", "pascal_voc/AP50", "pascal_voc/AP75", "pascal_voc/AP95"} <= set(
        metrics
    )
    assert all(0 <= metrics[k] <= 1 for k in ("pascal_voc/mAP", "pascal_voc/AP50"))


@pytest.mark.parametrize(
    "split,categories,classes",
    [("det", "color", 8), ("det", "orient", 8), ("det-upright", "chiral", 2), ("det", "shape", 8)],
)
def test_embedded_category_files_feed_the_cards(split, categories, classes, tmp_path):
    """--set data.categories picks the colour, orientation or chirality COCO file of the generated
    split."""
    card = load_card(
        "embedded-mrcnn",
        {"data.split": split, "data.categories": categories, "data.n": 6, "data.image_size": 64},
    )
    parts = data_parts(card, str(tmp_path))
    assert (
        parts["train"]["ann"].endswith(f"instances_{categories}.json")
        and len(parts["val"]["classes"]) == classes
    )
    assert all(
        a["category_id"] <= classes
        for a in json.loads(open(parts["train"]["ann"]).read())["annotations"]
    )
    # no flip, no photometric distortion: they would corrupt these labels
    assert not card.train_augment
    if categories == "chiral":
        with pytest.raises(ValueError, match="no 'chiral' categories for split det"):
            data_parts(
                load_card(
                    "embedded-mrcnn",
                    {"data.categories": "chiral", "data.n": 6, "data.image_size": 64},
                ),
                str(tmp_path),
            )


def test_the_category_runs_of_one_checkpoint_keep_their_own_folders(tmp_path):
    default = load_card("embedded-frcnn", {})
    cards = [
        default,
        load_card("embedded-frcnn", {"data.categories": "color"}),
        load_card("embedded-frcnn", {"data.categories": "orient"}),
        load_card("embedded-frcnn", {"data.split": "det-upright", "data.categories": "chiral"}),
        load_card("embedded-frcnn", {"max_iters": 10}),  # not a data variant
    ]
    tags = [data_tag(card, default) for card in cards]
    assert tags == ["", "color", "orient", "det-upright-chiral", ""]
    folders = [run_folder(tmp_path, c, "vicreg_resnet18w16", 0, t) for c, t in zip(cards, tags)]
    assert folders[0] == tmp_path / "embedded-frcnn_vicreg_resnet18w16_s0"  # as before
    assert folders[1] == tmp_path / "embedded-frcnn_color_vicreg_resnet18w16_s0"
    assert len(set(folders[:4])) == 4 and folders[4] == folders[0]


def test_missing_data_root_names_the_layout(tmp_path):
    card = load_card("voc0712-frcnn-c4-24k", {"data.root": str(tmp_path / "nowhere")})
    with pytest.raises(
        FileNotFoundError, match="VOC image set not found: .*nowhere.*data.root=PATH"
    ):
        data_parts(card)
    card = load_card("coco-mrcnn-fpn-1x", {"data.root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="COCO train images not found"):
        data_parts(card)


def test_torchrun_without_gpus_stops_with_one_line(tmp_path):
    """Several processes need GPUs (mmengine's pytorch launcher sets a CUDA device per process): on
    CPU the launch stops before any training, with a message saying what to do, and writes no
    record."""
    from tests.pretrain.test_train import torchrun

    records = tmp_path / "records.jsonl"
    result = torchrun(
        "-m",
        "downstream.detection",
        "--protocol",
        "embedded-frcnn",
        "--arch",
        "resnet18w16",
        "--floor",
        "--records",
        str(records),
        "--out",
        str(tmp_path / "work"),
        "--set",
        "data.n=6",
        "data.image_size=64",
    )
    assert result.returncode != 0 and not records.exists()
    assert (
        "2 processes but no GPU" in result.stderr
        and "run detection as one process on CPU" in result.stderr
    )


def test_unknown_protocol_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="known protocols: .*embedded-frcnn"):
        load_card("voc-typo")


def test_records_and_the_skip_check_key_on_the_checkpoint_content(tmp_path):
    from core.checkpoints import Backbone
    from core.records import checkpoint_ref, read_records
    from downstream.detection.__main__ import already_recorded, record_runs

    card = load_card("embedded-mrcnn", {})
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights a")
    second.write_bytes(b"weights b")
    records = tmp_path / "segmentation.jsonl"
    bb = Backbone(torch.nn.Identity(), "mast", "resnet18", 16, ckpt=first, pretrain_epochs=16)
    ref = checkpoint_ref(first)
    assert not already_recorded(records, card, bb, ref, seed=0)
    written = record_runs(
        card,
        {"coco/bbox_mAP": 0.123, "coco/segm_mAP": 0.2, "loss": 1.0},
        method="mast",
        arch=bb.arch_label,
        ckpt_ref=ref,
        seed=0,
        records=records,
        n_train=4,
        n_test=2,
        epochs=16,
    )
    table = read_records(records)
    assert written == 2 and sorted(table["metric"]) == ["box_AP", "mask_AP"]
    assert sorted(table["value"].round(1)) == [12.3, 20.0]
    assert all(r == ref for r in table["pretrain_ckpt"])
    assert already_recorded(records, card, bb, ref, seed=0)
    assert not already_recorded(records, card, bb, ref, seed=1)
    assert not already_recorded(records, card, bb, checkpoint_ref(second), seed=0)  # other weights


def test_a_floor_is_recorded_with_its_init_and_older_floors_are_redone(tmp_path):
    from core.checkpoints import FLOOR_INIT, Backbone
    from core.records import read_records
    from downstream.detection.__main__ import already_recorded, record_runs

    card = load_card("embedded-frcnn", {})
    records = tmp_path / "detection.jsonl"
    floor = Backbone(None, "random-init", "resnet18", 16, init=FLOOR_INIT)
    common = dict(method="random-init", arch="resnet18w16", ckpt_ref=None, seed=0, records=records)
    record_runs(card, {"coco/bbox_mAP": 0.05}, **common, n_train=4, n_test=2, epochs=0)
    assert not already_recorded(records, card, floor, None, seed=0)  # no init: an older floor
    record_runs(
        card, {"coco/bbox_mAP": 0.07}, **common, n_train=4, n_test=2, epochs=0, init=FLOOR_INIT
    )
    assert already_recorded(records, card, floor, None, seed=0)
    assert read_records(records)["config"].iloc[-1]["init"] == FLOOR_INIT


def test_the_random_floor_detector_keeps_its_residual_branches():
    from downstream.detection.models import detector_config

    assert detector_config("resnet18", 16, 3)["backbone"]["zero_init_residual"] is False
    assert detector_config("resnet18", 16, 3, pretrained="b.pth")["backbone"]["zero_init_residual"]


def test_the_logged_lr_is_the_heads_when_the_backbone_is_held(tmp_path):
    """The embedded cards hold the backbone at lr x 0; mmengine logs the first group's lr, which
    must be the heads' (the card's lr), while every backbone tensor keeps lr 0."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope

    from downstream.detection.runner import mmengine_config

    card = load_card("embedded-frcnn", TINY_SCHEDULE)
    cfg = mmengine_config(
        card, tiny_coco(tmp_path / "coco"), "resnet18", 16, None, tmp_path / "work", seed=0
    )
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert wrapper.get_lr()["lr"][0] == card.lr == 0.02
    backbone = {id(p) for p in model.backbone.parameters()}
    groups = wrapper.optimizer.param_groups
    assert {g["lr"] for g in groups if id(g["params"][0]) in backbone} == {0.0}
    assert {g["lr"] for g in groups if id(g["params"][0]) not in backbone} == {0.02}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_diverging_run_stops_at_the_first_nan_loss(tmp_path):
    from downstream.detection.runner import DetectionDiverged

    parts = tiny_coco(tmp_path / "coco")
    # an lr of 1e4 sends the losses to NaN within a few steps of 50
    card = load_card("embedded-frcnn", {**TINY_SCHEDULE, "max_iters": 50, "lr": 1e4})
    with pytest.raises(DetectionDiverged, match=r"loss not finite at iteration \d+ \(") as caught:
        run(card, parts, None, "resnet18", 4, tmp_path / "work", seed=0)
    assert 1 <= caught.value.iteration < 50
    assert caught.value.terms and not any(map(math.isfinite, caught.value.terms.values()))
    assert not list((tmp_path / "work").rglob("iter_50.pth"))  # stopped there, not at the end


def _transfer_args(tmp_path, seed=2):
    import argparse

    return argparse.Namespace(force=False, seed=seed, out=tmp_path / "runs")


def test_a_diverged_run_is_recorded_as_null_once_and_left_out_of_the_tables(
    tmp_path, monkeypatch, capsys
):
    from analysis.tables import aggregate
    from core.checkpoints import FLOOR_INIT, Backbone
    from core.records import read_records
    from downstream.detection import __main__ as cli
    from downstream.detection import runner

    def diverge(*args, **kwargs):
        raise runner.DetectionDiverged(60, {"loss": float("nan"), "loss_cls": float("inf")})

    monkeypatch.setattr(runner, "run", diverge)
    card = load_card("embedded-mrcnn", {})
    parts = tiny_coco(tmp_path / "coco")
    floor = Backbone(None, "random-init", "resnet18", 16, init=FLOOR_INIT)
    records = tmp_path / "segmentation.jsonl"
    cli._transfer(_transfer_args(tmp_path), card, parts, floor, records, (4, 4), True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diverged: embedded-mrcnn random-init")
    assert "loss not finite at iteration 60 (loss=nan, loss_cls=inf)" in lines[0]
    table = read_records(records)
    assert sorted(table["metric"]) == sorted(
        ["box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"]
    )
    assert table["value"].isna().all() and table["diverged"].str.contains("iteration 60").all()
    assert cli.already_recorded(records, card, floor, None, seed=2)  # not retried
    assert aggregate(table).empty  # no number from a diverged run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(runner, "run", must_not_run)
    cli._transfer(_transfer_args(tmp_path), card, parts, floor, records, (4, 4), True)
    assert "records exist" in capsys.readouterr().out


def test_an_evaluation_without_ap_stops_with_one_line_and_records_nothing(tmp_path, monkeypatch):
    from core.checkpoints import FLOOR_INIT, Backbone
    from downstream.detection import __main__ as cli
    from downstream.detection import runner

    monkeypatch.setattr(runner, "run", lambda *args, **kwargs: {})
    floor = Backbone(None, "random-init", "resnet18", 16, init=FLOOR_INIT)
    records = tmp_path / "detection.jsonl"
    card = load_card("embedded-frcnn", {})
    with pytest.raises(RuntimeError, match="the evaluation returned no AP .*nothing recorded"):
        cli._transfer(
            _transfer_args(tmp_path), card, tiny_coco(tmp_path / "c"), floor, records, (4, 4), True
        )
    assert not records.exists()


@pytest.mark.parametrize("protocol", ["embedded-frcnn", "embedded-mrcnn"])
def test_a_held_backbone_takes_no_gradient_and_trains_the_same_heads(protocol, tmp_path):
    from mmengine.runner import Runner

    from downstream.detection.handoff import export_for_mmdet
    from downstream.detection.runner import mmengine_config

    parts = tiny_coco(tmp_path / "coco")
    ckpt, _ = suite_file(tmp_path)
    card = load_card(protocol, {**TINY_SCHEDULE, "max_iters": 3})
    trained = {}
    for held in (True, False):
        work = tmp_path / f"work_{held}"
        work.mkdir()
        weights = str(export_for_mmdet(ckpt, work / "backbone.pth")[0])
        cfg = mmengine_config(card, parts, "resnet18", 16, weights, work, seed=0)
        assert any(h["type"] == "HeldBackboneHook" for h in cfg.custom_hooks)
        if not held:
            cfg.custom_hooks = [h for h in cfg.custom_hooks if h["type"] != "HeldBackboneHook"]
        runner = Runner.from_cfg(cfg)
        runner.train()
        model = runner.model
        assert all(not p.requires_grad for p in model.backbone.parameters()) == held
        trained[held] = {k: v.clone() for k, v in model.state_dict().items()}
    # the same weights and BN statistics everywhere: holding the backbone changed only the work
    for key, value in trained[True].items():
        assert torch.equal(value, trained[False][key]), key
