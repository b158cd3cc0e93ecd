"""Import of external SSL ResNet checkpoints: every layout is built from a real model's state_dict,
saved with torch.save, imported, and must give the very same features as the model it came from."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from core.backbones import backbone_state_dict, build_backbone
from core.checkpoints import (
    FORMAT,
    CheckpointError,
    ImportReport,
    convert,
    detect_format,
    extract_backbone,
    import_backbone,
    load_checkpoint,
    main,
)

WIDTH = 8


def random_model(arch: str = "resnet18", width: int = WIDTH, seed: int = 0) -> nn.Module:
    """A backbone whose every tensor (BN statistics and the zero-initialised gammas included) is
    random."""
    torch.manual_seed(seed)
    model = build_backbone(arch, width)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            else:
                tensor.normal_(0, 0.2)
    return model.eval()


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def assert_same_features(source: nn.Module, backbone: dict, report: ImportReport) -> None:
    target = build_backbone(report.arch, report.base_width)
    # fc is Identity: no key may be missing or left over
    target.load_state_dict(backbone, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(features(source, x), features(target, x))


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def head(*names: str) -> dict:
    return {name: torch.randn(4, 4) for name in names}


# ---------------------------------------------------------------- layouts, one builder each: (obj,
# source)


def suite_layout(model=None):
    model = random_model() if model is None else model
    return {
        "format": FORMAT,
        "backbone": backbone_state_dict(model),
        "arch": "resnet18",
        "base_width": model.conv1.out_channels,
        "method": "mast",
        "config": {},
        "epoch": 3,
    }, model


def torchvision_layout(model=None):
    model = random_model() if model is None else model
    state = backbone_state_dict(model)
    dim = model.fc.in_features if isinstance(model.fc, nn.Linear) else model.feature_dim
    state.update({"fc.weight": torch.randn(10, dim), "fc.bias": torch.randn(10)})
    return state, model


# MoCo v2: fc is the 2-layer MLP head, encoder_k the momentum copy, queue a buffer
def moco_layout(
    model=None,
):
    model = random_model() if model is None else model
    q = backbone_state_dict(model)
    state = {
        **prefixed(q, "module.encoder_q."),
        **head(
            "module.encoder_q.fc.0.weight",
            "module.encoder_q.fc.0.bias",
            "module.encoder_q.fc.2.weight",
            "module.encoder_q.fc.2.bias",
        ),
        **prefixed(backbone_state_dict(random_model(seed=5)), "module.encoder_k."),
        **head("module.encoder_k.fc.0.weight"),
        "module.queue": torch.randn(16, 32),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()
    return {"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": optimizer}, model


def mocov3_layout(model=None):
    model = random_model() if model is None else model
    state = {
        **prefixed(backbone_state_dict(model), "module.base_encoder."),
        **head(
            "module.base_encoder.fc.0.weight",
            "module.base_encoder.fc.1.weight",
            "module.base_encoder.fc.3.weight",
        ),
        **prefixed(backbone_state_dict(random_model(seed=6)), "module.momentum_encoder."),
        **head(
            "module.momentum_encoder.fc.0.weight",
            "module.predictor.0.weight",
            "module.predictor.1.weight",
        ),
    }
    return {"epoch": 100, "arch": "resnet18", "state_dict": state, "optimizer": {}}, model


def lightning_layout(model=None):  # solo-learn
    model = random_model() if model is None else model
    state = {
        **prefixed(backbone_state_dict(model), "backbone."),
        **prefixed(backbone_state_dict(random_model(seed=7)), "momentum_backbone."),
        **head(
            "projector.0.weight",
            "projector.1.weight",
            "momentum_projector.0.weight",
            "classifier.weight",
        ),
    }
    return {
        "epoch": 9,
        "global_step": 900,
        "pytorch-lightning_version": "2.2.0",
        "state_dict": state,
        "hyper_parameters": {"cfg": {"method": "vicreg", "lr": 0.3}},
        "loops": {},
        "callbacks": {},
    }, model


def lightly_layout(model=None):  # backbone = nn.Sequential(*list(resnet.children())[:-1])
    resnet = random_model() if model is None else model
    sequential = nn.Sequential(*list(resnet.children())[:-1])
    source = nn.Sequential(sequential, nn.Flatten(1))
    state = {
        **prefixed(sequential.state_dict(), "backbone."),
        **head("projection_head.layers.0.weight"),
    }
    return {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
    }, source


def mmselfsup_layout(model=None, prefix: str = "backbone."):
    model = random_model() if model is None else model
    state = {
        **prefixed(backbone_state_dict(model), prefix),
        **head("neck.mlp.0.weight", "head.predictor.0.weight"),
        **prefixed(backbone_state_dict(random_model(seed=8)), "target_net.0."),
    }
    return {"meta": {"epoch": 200, "mmselfsup_version": "1.0.0"}, "state_dict": state}, model


LAYOUTS = {
    "mast-suite": suite_layout,
    "torchvision": torchvision_layout,
    "moco": moco_layout,
    "mocov3": mocov3_layout,
    "lightning": lightning_layout,
    "mmselfsup": mmselfsup_layout,
}


def save(obj, tmp_path, name: str = "ck.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_each_layout_is_detected_and_round_trips(fmt, tmp_path):
    obj, source = LAYOUTS[fmt]()
    assert detect_format(obj) == fmt
    path = save(obj, tmp_path)
    for requested in ("auto", fmt):
        backbone, report = import_backbone(path, requested)
        assert (report.format, report.arch, report.base_width) == (fmt, "resnet18", WIDTH)
        assert (
            report.n_backbone
            == len(backbone)
            == len(backbone_state_dict(build_backbone("resnet18", WIDTH)))
        )
        assert not any(k.startswith("fc.") for k in backbone) and report.filled == []
        assert_same_features(source, backbone, report)


def test_dropped_keys_are_reported(tmp_path):
    _, report = import_backbone(save(moco_layout()[0], tmp_path))
    assert report.prefix == "module.encoder_q."
    assert {
        "module.encoder_q.fc.0.weight",
        "module.encoder_q.fc.2.bias",
        "module.queue",
        "module.queue_ptr",
        "module.encoder_k.conv1.weight",
        "module.encoder_k.fc.0.weight",
    } <= set(report.dropped)
    assert not any(k.startswith("module.encoder_q.") and ".fc." not in k for k in report.dropped)
    _, report = import_backbone(save(mocov3_layout()[0], tmp_path))
    assert report.prefix == "module.base_encoder."
    assert {
        "module.base_encoder.fc.0.weight",
        "module.predictor.1.weight",
        "module.momentum_encoder.layer4.1.bn2.weight",
    } <= set(report.dropped)
    _, report = import_backbone(save(torchvision_layout()[0], tmp_path))
    assert (report.prefix, report.dropped) == ("", ["fc.weight", "fc.bias"])
    summary = import_backbone(save(lightning_layout()[0], tmp_path))[1].summary()
    assert (
        summary["dropped_groups"]["momentum_backbone"] == 120
        and summary["dropped_groups"]["projector"] == 2
    )


def test_torchvision_supervised_weights_with_fc(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    backbone, report = import_backbone(save(model.state_dict(), tmp_path))
    assert (report.format, report.arch, report.base_width, report.dropped) == (
        "torchvision",
        "resnet18",
        64,
        ["fc.weight", "fc.bias"],
    )
    model.fc = nn.Identity()
    assert_same_features(model, backbone, report)


def test_ddp_prefixed_torchvision_state_dict(tmp_path):
    obj, source = torchvision_layout()
    backbone, report = import_backbone(save({"state_dict": prefixed(obj, "module.")}, tmp_path))
    assert (report.format, report.prefix) == ("torchvision", "module.")
    assert_same_features(source, backbone, report)


def test_lightly_sequential_indices_are_renamed(tmp_path):
    obj, source = lightly_layout()
    assert (
        "backbone.0.weight" in obj["state_dict"] and "backbone.7.1.bn2.weight" in obj["state_dict"]
    )
    backbone, report = import_backbone(save(obj, tmp_path))
    assert report.renamed == report.n_backbone and report.dropped == [
        "projection_head.layers.0.weight"
    ]
    assert (
        list(backbone)[:2] == ["conv1.weight", "bn1.weight"] and "layer4.1.bn2.weight" in backbone
    )
    assert_same_features(source, backbone, report)


@pytest.mark.parametrize("prefix", ["module.backbone.", "model.backbone."])
def test_mmselfsup_other_prefixes(prefix, tmp_path):
    obj, source = mmselfsup_layout(prefix=prefix)
    del obj["meta"]
    backbone, report = import_backbone(save(obj, tmp_path))
    assert (report.format, report.prefix) == ("mmselfsup", prefix)
    assert_same_features(source, backbone, report)


def test_mmselfsup_moco_with_aliased_encoder_q(tmp_path):
    """mmselfsup's MoCo registers its backbone twice: as backbone.* and as encoder_q.0.* (with the
    neck as encoder_q.1.*); it must be read as mmselfsup under backbone.*, not as the official MoCo
    layout."""
    obj, source = mmselfsup_layout()
    q = backbone_state_dict(source)
    obj["state_dict"].update(
        {
            **prefixed(q, "encoder_q.0."),
            **head("encoder_q.1.mlp.0.weight"),
            **prefixed(backbone_state_dict(random_model(seed=9)), "encoder_k.0."),
            "queue": torch.randn(16, 32),
            "queue_ptr": torch.zeros(1, dtype=torch.long),
        }
    )
    backbone, report = import_backbone(save(obj, tmp_path))
    assert (report.format, report.prefix) == ("mmselfsup", "backbone.")
    assert {"encoder_q.0.conv1.weight", "encoder_k.0.layer4.1.bn2.bias", "queue"} <= set(
        report.dropped
    )
    assert_same_features(source, backbone, report)


def test_missing_num_batches_tracked_are_filled(tmp_path):
    obj, source = torchvision_layout()
    obj = {k: v for k, v in obj.items() if not k.endswith("num_batches_tracked")}
    backbone, report = import_backbone(save(obj, tmp_path))
    assert len(report.filled) == 20 and "bn1.num_batches_tracked" in report.filled
    assert backbone["layer1.0.bn1.num_batches_tracked"].item() == 0
    # eval-mode features do not depend on the counters
    assert_same_features(source, backbone, report)


# ---------------------------------------------------------------- architectures


def test_resnet101_and_full_width_from_the_keys():
    with torch.device("meta"):  # shapes only: a full-width ResNet-101 without its memory
        state = backbone_state_dict(build_backbone("resnet101"))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    backbone, report = extract_backbone({"state_dict": prefixed(state, "module.base_encoder.")})
    assert (report.format, report.arch, report.base_width, report.n_backbone) == (
        "mocov3",
        "resnet101",
        64,
        624,
    )
    assert len(report.filled) == 104 and backbone["layer3.22.conv3.weight"].shape == (
        1024,
        256,
        1,
        1,
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_architecture_and_width_from_the_keys(arch, tmp_path):
    model = random_model(arch, width=4)
    obj = {
        "state_dict": {
            **prefixed(backbone_state_dict(model), "module.encoder_q."),
            **head("module.queue"),
        }
    }
    backbone, report = import_backbone(save(obj, tmp_path))
    assert (report.arch, report.base_width) == (arch, 4)
    assert_same_features(model, backbone, report)


def test_unknown_block_counts_are_an_error(tmp_path):
    state = backbone_state_dict(random_model())
    state.update(
        {
            k.replace("layer4.1.", "layer4.2."): v
            for k, v in state.items()
            if k.startswith("layer4.1.")
        }
    )
    with pytest.raises(
        CheckpointError, match=r"no supported ResNet has \[2, 2, 2, 3\] basic blocks"
    ):
        import_backbone(save(state, tmp_path))


# ---------------------------------------------------------------- refusals


def test_wrong_prefix(tmp_path):
    obj, _ = moco_layout()
    obj["state_dict"] = {
        k.replace("encoder_q.", "encoder."): v for k, v in obj["state_dict"].items()
    }
    path = save(obj, tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"no key starts with 'module.encoder_q.' or 'encoder_q.'.*"
        r"keys seen: \[module.encoder.conv1.weight, ",
    ):
        import_backbone(path, "moco")
    with pytest.raises(CheckpointError) as info:
        import_backbone(path)
    message = str(info.value)
    assert (
        "no supported checkpoint layout matches" in message
        and "module.encoder.conv1.weight" in message
    )
    assert "in all)" in message and "MoCo v3" in message and "\n" not in message


def test_missing_backbone_key_is_listed(tmp_path):
    obj, _ = torchvision_layout()
    del obj["layer4.1.bn2.weight"]
    with pytest.raises(
        CheckpointError, match=r"missing backbone keys \[layer4.1.bn2.weight\] \(1 in all\)"
    ):
        import_backbone(save(obj, tmp_path))


def test_many_missing_keys_are_shortened(tmp_path):
    obj, _ = lightning_layout()
    obj["state_dict"] = {
        k: v
        for k, v in obj["state_dict"].items()
        if not (k.startswith(("backbone.layer3.", "backbone.layer4.")) and ".bn" in k)
    }
    with pytest.raises(
        CheckpointError,
        match=r"missing backbone keys \[layer3\.0\.bn1\.weight, (\S+, ){9}\.\.\.\] "
        r"\(32 in all\)",
    ):
        import_backbone(save(obj, tmp_path))


def test_unexpected_backbone_key_is_listed(tmp_path):
    obj, _ = lightning_layout()
    obj["state_dict"]["backbone.layer1.0.se.fc1.weight"] = torch.zeros(2, 2)
    with pytest.raises(
        CheckpointError, match=r"unexpected backbone keys \[backbone.layer1.0.se.fc1.weight\]"
    ):
        import_backbone(save(obj, tmp_path))


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    obj, _ = mmselfsup_layout()
    obj["state_dict"]["backbone.conv1.weight"] = torch.zeros(WIDTH, 3, 3, 3)  # a CIFAR stem
    with pytest.raises(
        CheckpointError, match=r"backbone.conv1.weight \(8, 3, 3, 3\) vs \(8, 3, 7, 7\)"
    ):
        import_backbone(save(obj, tmp_path))


def test_suite_record_must_match_weights(tmp_path):
    obj, _ = suite_layout()
    obj["arch"] = "resnet50"
    with pytest.raises(
        CheckpointError, match="records arch='resnet50', base_width=8 but its backbone is resnet18"
    ):
        import_backbone(save(obj, tmp_path))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_hyper_parameters_are_refused(tmp_path):
    obj, _ = lightning_layout()
    obj["hyper_parameters"] = {"args": argparse.Namespace(method="byol", lr=1.0)}
    with pytest.raises(
        CheckpointError, match=r"\(argparse.Namespace\).*unpickling an untrusted file"
    ):
        import_backbone(save(obj, tmp_path))


def test_unknown_format_name_and_not_a_dict(tmp_path):
    path = save(torchvision_layout()[0], tmp_path)
    with pytest.raises(CheckpointError, match="unknown format 'swav'"):
        import_backbone(path, "swav")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        import_backbone(save([torch.zeros(1)], tmp_path, "list.pt"))


# ---------------------------------------------------------------- convert and the CLI


def test_convert_then_load_and_inspect(tmp_path, capsys):
    obj, source = moco_layout()
    src = save(obj, tmp_path, "moco.pth.tar")
    out = convert(src, tmp_path / "suite" / "imported.pt")
    state = load_checkpoint(out)
    assert (state["arch"], state["base_width"], state["method"]) == (
        "resnet18",
        WIDTH,
        "imported:moco",
    )
    assert state["config"]["source"] == str(src.resolve())
    assert state["config"]["report"]["prefix"] == "module.encoder_q."
    assert all(state[k] is None for k in ("expander", "masks", "uncertainty_head", "aug_names"))
    report = ImportReport(**state["config"]["report"])
    assert_same_features(source, state["backbone"], report)
    assert [p.name for p in out.parent.iterdir()] == ["imported.pt"]

    assert main(["inspect", str(src)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["format"], shown["arch"], shown["base_width"], shown["prefix"]) == (
        "moco",
        "resnet18",
        WIDTH,
        "module.encoder_q.",
    )
    assert shown["n_backbone"] == 120 and shown["n_dropped"] == len(obj["state_dict"]) - 120
    assert main(["inspect", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["format"], shown["arch"], shown["method"], shown["n_dropped"]) == (
        "mast-suite/1",
        "resnet18",
        "imported:moco",
        0,
    )
    # converting a suite checkpoint is an identity on the backbone
    again = load_checkpoint(convert(out, tmp_path / "again.pt"))
    assert all(torch.equal(again["backbone"][k], v) for k, v in state["backbone"].items())


def test_cli_convert_and_errors(tmp_path, capsys):
    src = save(lightly_layout()[0], tmp_path, "lightly.ckpt")
    out = tmp_path / "out.pt"
    assert main(["convert", str(src), str(out), "--format", "lightning"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert load_checkpoint(out)["method"] == "imported:lightning"
    bad = save({"weird.key": torch.zeros(1)}, tmp_path, "weird.pt")
    for argv in (
        ["inspect", str(bad)],
        ["convert", str(bad), str(tmp_path / "x.pt")],
        ["convert", str(src), str(tmp_path / "x.pt"), "--format", "moco"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "x.pt").exists()


def test_module_entry_point_reports_errors_in_one_line(tmp_path):
    """`python -m core.checkpoints` runs the module as __main__; its errors must still be one line,
    exit 2."""
    bad = save({"weird.key": torch.zeros(1)}, tmp_path, "weird.pt")
    done = subprocess.run(
        [sys.executable, "-m", "core.checkpoints", "inspect", str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr.startswith("error: ")
        and done.stderr.count("\n") == 1
        and "weird.key" in done.stderr
    )
