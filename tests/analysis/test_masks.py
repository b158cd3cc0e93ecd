"""Mask overlap: IoU, cosine and unique/shared counts on hand-made masks; the CLI on hand-made
checkpoints."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from analysis import masks
from analysis.curves import AnalysisInputError
from core.checkpoints import FORMAT, save_checkpoint

OPS = ["crop", "flip", "blur"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_iou_disjoint_identical_and_half_overlap():
    a = [1, 1, 1, 1, 0, 0, 0, 0]
    b = [0, 0, 1, 1, 1, 1, 0, 0]  # shares 2 of a's 4 dims: IoU 2 / 6
    c = [0, 0, 0, 0, 0, 0, 1, 1]  # disjoint from a and b
    iou = masks.mask_iou(np.array([a, b, c, a], dtype=bool))
    assert iou[0, 1] == pytest.approx(1 / 3) and iou[1, 0] == pytest.approx(1 / 3)
    assert iou[0, 2] == 0 and iou[1, 2] == 0
    assert iou[0, 3] == 1 and np.all(np.diag(iou) == 1)


def test_iou_of_empty_masks_follows_the_documented_convention():
    iou = masks.mask_iou(np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=bool))
    assert iou.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_cosine_disjoint_identical_and_partial():
    # row 0 scaled: cosine 1
    m = np.array(
        [
            [1.0, 1.0, 0.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],  # one of two dims shared with row 0: cosine 1/2
            [0.0, 0.0, 0.0, 3.0],  # disjoint
            [2.0, 2.0, 0.0, 0.0],
        ]
    )
    cos = masks.mask_cosine(m)
    assert cos[0, 1] == pytest.approx(0.5) and cos[0, 2] == 0 and cos[0, 3] == pytest.approx(1.0)
    assert masks.mask_cosine(np.array([[0.5, 0.5], [1.0, 0.0]]))[0, 1] == pytest.approx(
        1 / math.sqrt(2)
    )


def test_unique_and_shared_counts():
    # 0.5 is not above the threshold
    m = np.array(
        [
            [0.9, 0.9, 0.9, 0.1, 0.1, 0.1],
            [0.1, 0.9, 0.1, 0.9, 0.1, 0.1],
            [0.1, 0.1, 0.9, 0.1, 0.5, 0.1],
        ]
    )
    counts = masks.unique_shared_counts(m)
    assert counts == {"unique": [1, 1, 0], "shared": [2, 1, 1], "unused": 2}


def test_mask_values_sigmoid_for_learned_and_raw_for_fixed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    learned = masks.mask_values({"masks": logits, "mask_kind": "learned"})
    assert torch.allclose(learned, torch.sigmoid(logits))
    fixed = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(masks.mask_values({"masks": fixed, "mask_kind": "fixed"}), fixed)


def _checkpoint(path, method, masks_logits):
    state = {
        "format": FORMAT,
        "backbone": {},
        "arch": "resnet18",
        "method": method,
        "config": {},
        "masks": masks_logits,
        "mask_kind": "learned" if masks_logits is not None else "none",
        "aug_names": OPS,
        "uncertainty_head": None,
        "epoch": 2,
        "step": 4,
    }
    return save_checkpoint(state, path)


def _args(paths, out):
    parser = argparse.ArgumentParser()
    masks.add_arguments(parser)
    return parser.parse_args([*map(str, paths), "--out", str(out)])


def test_run_writes_figures_and_numbers(tmp_path):
    run_dir = tmp_path / "mast_run"
    run_dir.mkdir()
    logits = torch.tensor([[4.0, 4.0, -4.0, -4.0], [-4.0, 4.0, 4.0, -4.0], [-4.0, -4.0, -4.0, 4.0]])
    _checkpoint(run_dir / "last.pt", "mast", logits)
    rows = [
        {"step": s, "epoch": 0, "loss": 1.0, "mask_density": {op: 0.5 + 0.01 * s for op in OPS}}
        for s in (1, 2)
    ]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = masks.run(_args([run_dir], tmp_path / "out"))
    folder = tmp_path / "out" / "mast_run"
    names = {p.name for p in written}
    assert names == {
        "iou.png",
        "cosine.png",
        "unique_shared.png",
        "density.png",
        "iou.csv",
        "cosine.csv",
        "unique_shared.csv",
        "masks.json",
    }
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((folder / "masks.json").read_text())
    assert summary["iou"][0][1] == pytest.approx(1 / 3) and summary["iou"][0][2] == 0
    # crop {0, 1}, flip {1, 2}, blur {3}: dim 1 is shared by crop and flip, every other dim unique
    assert summary["unique"] == {"crop": 1, "flip": 1, "blur": 1}
    assert summary["shared"] == {"crop": 1, "flip": 1, "blur": 0} and summary["unused_dims"] == 0
    assert (folder / "iou.csv").read_text().splitlines()[0] == "op,crop,flip,blur"


def test_vicreg_checkpoint_is_skipped_with_a_message(tmp_path, capsys):
    path = _checkpoint(tmp_path / "vicreg.pt", "vicreg", None)
    assert masks.run(_args([path], tmp_path / "out")) == []
    err = capsys.readouterr().err
    assert "skipping" in err and str(path) in err and "'vicreg' has no masks" in err
    assert not (tmp_path / "out").exists()


def test_missing_path_and_non_checkpoint_are_one_line_value_errors(tmp_path):
    with pytest.raises(AnalysisInputError, match="nope.pt: not found"):
        masks.run(_args([tmp_path / "nope.pt"], tmp_path / "out"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        masks.run(_args([junk], tmp_path / "out"))
    with pytest.raises(AnalysisInputError, match="without last.pt"):
        masks.run(_args([tmp_path], tmp_path / "out"))


# ------------------------------------------------------------------------------ AND assignment and
# change
TINY = [
    "data.image_size=32",
    "data.n=24",
    "data.num_workers=0",
    "model.arch=resnet18",
    "model.base_width=4",
    "model.expander=16-8",
    "method=mast_nounc",
    "loss.combine=and",
    "views.resample=all",
]


def _assignment_state(logits, cfg_extra=()):
    from core.config import load_config, to_dict
    from pretrain.config import PretrainConfig
    from pretrain.train import build_model

    cfg = load_config(PretrainConfig, None, [*TINY, *cfg_extra])
    ops = ["crop", "flip", "color_jitter", "grayscale", "blur", "solarize"]
    torch.manual_seed(0)
    model = build_model(cfg, len(ops), ops)
    return {
        "format": FORMAT,
        "backbone": model.backbone.state_dict(),
        "expander": model.expander.state_dict(),
        "arch": "resnet18",
        "method": "mast_nounc",
        "config": to_dict(cfg),
        "aug_names": ops,
        "masks": logits,
        "mask_kind": "assign",
        "uncertainty_head": None,
        "epoch": 1,
        "step": 2,
    }


def test_assignment_rows_are_shared_then_the_owning_ops():
    logits = torch.full((6, 8), -9.0)
    logits[0, :3] = logits[1, 3:5] = logits[2, 5:] = 9.0  # shared 0-2, flip 3-4, color_jitter 5-7
    state = _assignment_state(logits)
    assert masks.mask_rows(state) == [
        "shared",
        "flip",
        "color_jitter",
        "grayscale",
        "blur",
        "solarize",
    ]
    values = masks.mask_values(state)
    assert torch.allclose(values.sum(0), torch.ones(8)) and values[1, 3] > 0.99
    scores = masks.variant_scores(state)
    assert list(scores) == ["flip", "color_jitter", "grayscale", "blur", "solarize"]
    assert scores["flip"].round(3).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    learned = {"masks": torch.tensor([[3.0, -3.0]]), "mask_kind": "learned", "aug_names": ["crop"]}
    # 1 - m: may vary
    assert np.allclose(masks.variant_scores(learned)["crop"], [0.0474, 0.9526], atol=1e-4)


def test_dimension_change_is_zero_where_the_embedding_ignores_the_image(tmp_path, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path / "data"))
    state = _assignment_state(torch.zeros(6, 8))
    state["expander"]["3.weight"][:3] = 0.0  # dims 0-2 of the last layer: constant for every image
    change = masks.dimension_change(state, ["flip", "grayscale"], n=12, batch_size=8)
    for op in ("flip", "grayscale"):
        assert (
            change[op].shape == (8,) and (change[op][:3] == 0).all() and (change[op][3:] > 0).all()
        )


def test_change_correlation_ranks_assignment_against_change(monkeypatch):
    state = {
        "masks": torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 4.0], [0.0, 0.0, 0.0]]),
        "mask_kind": "assign",
        "aug_names": ["crop", "flip", "blur"],
        "config": {"views": {"base": ["crop"]}},
    }
    monkeypatch.setattr(
        masks,
        "dimension_change",
        lambda state, ops, n, seed: {
            "flip": np.array([0.1, 0.5, 0.9]),
            "blur": np.array([0.3, 0.3, 0.3]),
        },
    )
    rho = masks.change_correlation(state, n=4)
    assert rho["flip"] == pytest.approx(1.0) and math.isnan(rho["blur"])
