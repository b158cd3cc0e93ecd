"""Invariance profile: pairs differ in exactly one op, the score formula, and toy backbones whose
invariances are known by construction."""

import argparse
import csv
import math

import pytest
import torch

from analysis import invariance as inv
from core.augment import OPS, PARAM_SLICES
from core.backbones import parse_arch
from core.checkpoints import CheckpointError

SIZE, N = 16, 8


@pytest.fixture(scope="module")
def images():
    """Colourful noise: every op (crop, flip, jitter, grayscale, blur, solarize) changes its
    pixels."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)


class Constant(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((len(x), 4), self.value)


class FlipSymmetric(torch.nn.Module):
    """x + mirror(x): float addition commutes, so a view and its mirror give bit-identical
    features."""

    def forward(self, x):
        return (x + x.flip(-1)).flatten(1)


class Pixels(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_constant_backbone_is_invariant_to_everything(images, value):
    found = inv.profile(Constant(value), images, seed=0)
    assert found["cos_random"] == pytest.approx(1.0)
    assert found["invariance"] == {op: 1.0 for op in OPS}


def test_flip_symmetric_backbone_is_exactly_flip_invariant_but_not_crop_invariant(images):
    found = inv.profile(FlipSymmetric(), images, ops=["flip", "crop"], seed=0)
    assert found["invariance"]["flip"] == pytest.approx(1.0, abs=1e-6)
    assert found["invariance"]["crop"] < 0.99


def test_pixel_backbone_is_moved_by_every_op(images):
    found = inv.profile(Pixels(), images, seed=0)
    for op in OPS:
        assert found["cos"][op] < 1.0 - 1e-4, op
        assert found["invariance"][op] < 1.0 - 1e-4, op
    assert found["cos_random"] < 1.0


@pytest.mark.parametrize("op", OPS)
def test_pairs_differ_in_exactly_that_op(op):
    a, b = inv.pair_params(op, torch.Generator().manual_seed(1), 32, 24, 20)
    part = PARAM_SLICES[op]
    outside = torch.ones(a.shape[1], dtype=torch.bool)
    outside[part] = False
    assert torch.equal(a[:, outside], b[:, outside])
    assert (a[:, part] != b[:, part]).any(dim=1).all(), "every pair must differ in the op"
    if op in inv.BINARY_OPS:
        # one applied, one not
        assert torch.equal(a[:, part] + b[:, part], torch.ones_like(a[:, part]))
    if op in ("color_jitter", "blur"):
        assert (a[:, part][:, 0] == 1).all() and (b[:, part][:, 0] == 1).all()  # both applied
    if op == "blur":
        assert (a[:, part][:, 1] != b[:, part][:, 1]).all()


def test_pairs_are_deterministic_per_seed():
    first = inv.pair_params("crop", torch.Generator().manual_seed(3), 4, 16, 16)
    again = inv.pair_params("crop", torch.Generator().manual_seed(3), 4, 16, 16)
    assert all(torch.equal(x, y) for x, y in zip(first, again))


def test_pairs_fail_when_the_config_cannot_vary_the_op():
    from core.augment import AugmentConfig

    whole_image = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    with pytest.raises(ValueError, match="cannot produce two different 'crop'"):
        inv.pair_params("crop", torch.Generator().manual_seed(0), 2, 16, 16, whole_image)


def test_random_partners_are_a_derangement():
    partner = inv.random_partners(torch.Generator().manual_seed(0), 9)
    assert sorted(partner.tolist()) == list(range(9))
    assert (partner != torch.arange(9)).all()


def test_score_formula_on_hand_made_cosines():
    scores = inv.invariance_scores({"flip": 0.9, "crop": 0.5, "blur": 1.0, "solarize": 0.25}, 0.5)
    assert scores == pytest.approx({"flip": 0.8, "crop": 0.0, "blur": 1.0, "solarize": -0.5})


def test_score_degenerate_when_images_do_not_move_features():
    scores = inv.invariance_scores({"flip": 1.0, "crop": 0.7}, 1.0)
    assert scores["flip"] == 1.0 and math.isnan(scores["crop"])


def test_cosine_pairs():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    assert inv.cosine_pairs(a, b).tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0])


def test_labels():
    assert inv.checkpoint_label("runs/mast_s0/last.pt") == "mast_s0"
    assert inv.checkpoint_label("runs/mast_s0/epoch_8.pt") == "mast_s0@epoch_8"
    assert inv.checkpoint_label("downloads/vicreg_resnet50.pth") == "vicreg_resnet50"
    assert parse_arch("resnet18w16") == ("resnet18", 16)
    assert parse_arch("resnet50") == ("resnet50", 64)
    with pytest.raises(ValueError, match="architecture label"):
        parse_arch("vit_b16")


def _args(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    inv.add_arguments(parser)
    return parser.parse_args(
        [
            *argv,
            "--n",
            "4",
            "--image-size",
            "32",
            "--device",
            "cpu",
            "--figure-dir",
            str(tmp_path / "fig"),
            "--table-dir",
            str(tmp_path / "tab"),
        ]
    )


def test_missing_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint\\(s\\) not found: .*nope.pt") as caught:
        inv.run(_args(tmp_path, str(tmp_path / "nope.pt")))
    assert "\n" not in str(caught.value)


def test_cli_writes_table_and_figure(tmp_path, monkeypatch):
    from core.backbones import backbone_state_dict, build_backbone

    ckpt = tmp_path / "external" / "tiny_r18.pth"
    ckpt.parent.mkdir()
    torch.manual_seed(0)
    # a bare torchvision state_dict
    torch.save(backbone_state_dict(build_backbone("resnet18", 8)), ckpt)
    gen = torch.Generator().manual_seed(0)
    tiny = list(torch.randint(0, 256, (4, 3, 32, 32), generator=gen, dtype=torch.uint8))
    monkeypatch.setattr(inv, "_load_images", lambda args: tiny)  # no data generation in a unit test
    written = inv.run(_args(tmp_path, str(ckpt), "--random", "resnet18w8", "--ops", "flip", "crop"))
    names = sorted(p.name for p in written)
    assert names == ["invariance.csv", "invariance.md", "invariance_profile.png"]
    rows = list(csv.DictReader(open(tmp_path / "tab" / "invariance.csv")))
    assert [r["label"] for r in rows] == ["tiny_r18", "random-init resnet18w8"]
    assert {"flip", "crop", "cos_flip", "cos_crop", "cos_random"} <= set(rows[0])
    assert all(math.isfinite(float(r["flip"])) for r in rows)
    assert "| tiny_r18 |" in (tmp_path / "tab" / "invariance.md").read_text()
    assert (tmp_path / "fig" / "invariance_profile.png").stat().st_size > 0
