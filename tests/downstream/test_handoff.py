"""Backbone hand-off to MMDetection: the exported file equals the suite backbone tensor by tensor,
mmdet's Pretrained init fills every ResNet tensor of FPN and C4 detectors from it, and a mismatch is
an error that lists the keys (mmengine itself only warns)."""

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from core.backbones import backbone_state_dict, build_backbone
from core.checkpoints import FORMAT, save_checkpoint
from downstream.detection.handoff import HandoffError, check_handoff, export_for_mmdet
from downstream.detection.models import detector_config

init_default_scope("mmdet")


def suite_file(tmp_path, width=16, seed=0, arch="resnet18"):
    torch.manual_seed(seed)
    model = build_backbone(arch, width)
    with torch.no_grad():  # every tensor non-trivial, so an unfilled one cannot pass by chance
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif not name.endswith("num_batches_tracked"):
                tensor.normal_(0, 0.1)
    path = tmp_path / f"{arch}w{width}_s{seed}.pt"
    save_checkpoint(
        {
            "format": FORMAT,
            "backbone": backbone_state_dict(model),
            "arch": arch,
            "base_width": width,
            "method": "mast",
            "config": {},
        },
        path,
    )
    return path, backbone_state_dict(model)


def built(model_cfg):
    detector = MODELS.build(model_cfg)
    detector.init_weights()
    return detector


def test_exported_weights_equal_the_suite_backbone(tmp_path):
    ckpt, expected = suite_file(tmp_path)
    path, weights = export_for_mmdet(ckpt, tmp_path / "mmdet.pth")
    stored = torch.load(path, weights_only=True)
    assert set(stored) == set(expected) - {
        k for k in expected if k.endswith("num_batches_tracked")
    } | {k for k in stored if k.endswith("num_batches_tracked")}
    assert all(
        torch.equal(stored[k], expected[k])
        for k in expected
        if not k.endswith("num_batches_tracked")
    )


@pytest.mark.parametrize("head,masks", [("fpn", False), ("fpn", True), ("c4", False), ("c4", True)])
def test_pretrained_init_fills_every_resnet_tensor(head, masks, tmp_path):
    ckpt, _ = suite_file(tmp_path)
    path, weights = export_for_mmdet(ckpt, tmp_path / "mmdet.pth")
    detector = built(
        detector_config("resnet18", 16, num_classes=8, head=head, masks=masks, pretrained=str(path))
    )
    checked = check_handoff(detector, weights)
    n_resnet = sum(not k.endswith("num_batches_tracked") for k in weights)
    assert checked == n_resnet  # all of conv1 ... layer4, in the backbone or the C4 shared head
    if head == "c4":
        assert any(k.startswith("roi_head.shared_head.layer4.") for k in detector.state_dict())


def test_random_init_or_other_weights_fail_with_the_keys(tmp_path):
    _, weights = suite_file(tmp_path, seed=0)
    other, _ = suite_file(tmp_path, seed=1)
    other_path, _ = export_for_mmdet(other, tmp_path / "other.pth")
    detector = built(detector_config("resnet18", 16, num_classes=8, pretrained=str(other_path)))
    with pytest.raises(
        HandoffError, match=r"tensors not loaded from the file \[backbone.conv1.weight"
    ):
        check_handoff(detector, weights)
    floor = built(detector_config("resnet18", 16, num_classes=8))
    with pytest.raises(HandoffError, match="not filled from"):
        check_handoff(floor, weights)


def test_width_mismatch_is_listed(tmp_path):
    wide, _ = suite_file(tmp_path, width=32)
    path, weights = export_for_mmdet(wide, tmp_path / "wide.pth")
    # mmengine only warns
    detector = built(detector_config("resnet18", 16, num_classes=8, pretrained=str(path)))
    with pytest.raises(HandoffError) as info:
        check_handoff(detector, weights, source=str(path))
    message = str(info.value)
    assert (
        "shape mismatches (detector vs file) [backbone.conv1.weight (16, 3, 7, 7) vs (32, 3, 7, 7)"
        in message
    )
    assert "\n" not in message and "base_channels" in message
