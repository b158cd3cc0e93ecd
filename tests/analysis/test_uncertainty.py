"""Uncertainty versus difficulty: binning, Spearman, pair variance (parity with the loss), per-epoch
means from a hand-written log, and the whole command on an untrained tiny checkpoint."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from analysis import uncertainty as unc
from core.augment import PARAM_NAMES, AugmentConfig, neutral_params
from core.checkpoints import FORMAT, save_checkpoint
from core.config import load_config, to_dict
from pretrain.config import PretrainConfig
from pretrain.losses import MASTLoss
from pretrain.losses.mast import LOG_VAR_RANGE
from pretrain.train import build_model

TINY = [
    "data.image_size=32",
    "data.n=32",
    "data.num_workers=0",
    "model.arch=resnet18",
    "model.base_width=4",
    "model.expander=32-32",
    "model.uncertainty_hidden=16",
]


def test_spearman_through_the_summary_is_exactly_plus_and_minus_one():
    d = np.linspace(0.0, 1.0, 50)
    rising = unc.summarize_op(d, np.exp(3 * d), binary=False)
    falling = unc.summarize_op(d, 5.0 - d**2, binary=False)
    assert abs(rising["spearman_rho"] - 1.0) < 1e-12 and abs(falling["spearman_rho"] + 1.0) < 1e-12
    means = [b["mean_uncertainty"] for b in rising["bins"]]
    assert means == sorted(means)  # monotone input: bin means rise too
    # constant: undefined
    assert unc.summarize_op(d, np.ones(50), binary=False)["spearman_rho"] is None


def test_continuous_bins_put_zero_apart_and_close_on_the_right():
    d = np.array([0.0, 0.0, 0.1, 0.2, 0.21, 0.5, 1.0])
    s = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
    bins = unc.summarize_op(d, s, binary=False, n_bins=5)["bins"]
    # {0}, (0,.2], (.2,.4], (.4,.6], (.6,.8], (.8,1]
    assert [b["count"] for b in bins] == [
        2,
        2,
        1,
        1,
        0,
        1,
    ]
    assert [b["mean_uncertainty"] for b in bins] == [2.0, 6.0, 9.0, 11.0, None, 13.0]
    assert bins[0]["centre"] == 0.0 and bins[1]["centre"] == pytest.approx(0.1)


def test_binary_ops_get_two_bins():
    summary = unc.summarize_op(
        np.array([0, 1, 1, 0, 1.0]), np.array([1, 4, 6, 3, 5.0]), binary=True
    )
    assert [(b["low"], b["count"], b["mean_uncertainty"]) for b in summary["bins"]] == [
        (0, 2, 2.0),
        (1, 3, 5.0),
    ]
    assert summary["kind"] == "binary" and summary["spearman_rho"] > 0


def test_pair_variance_matches_the_loss_definition():
    assert unc.LOG_VAR_RANGE == LOG_VAR_RANGE
    # V=2, B=1, K=2 (second op clamped)
    log_var = torch.tensor([[[0.0, 10.0]], [[math.log(3.0), -10.0]]])
    s = unc.pair_variance(log_var, torch.tensor([[0, 1], [0, 1]]))
    assert s[0, 0].item() == pytest.approx(2.0) and s[0, 1].item() == pytest.approx(
        (math.exp(6) + math.exp(-6)) / 2
    )
    # parity with the loss's own s (logged as s_mean), factorized pairs included
    torch.manual_seed(0)
    z, log_var = torch.randn(3, 8, 4), torch.randn(3, 8, 2) * 4
    pairs = torch.tensor([[0, 1], [0, 2]])
    _, terms = MASTLoss()(z, pairs, torch.ones(8, 2), torch.full((2, 4), 0.5), log_var)
    assert torch.allclose(unc.pair_variance(log_var, pairs).mean(0), terms["s_mean"])


def test_epoch_means_from_a_hand_written_log(tmp_path):
    rows = [
        {"step": 1, "epoch": 0, "uncertainty": {"crop": 1.0, "flip": 2.0}},
        {"step": 2, "epoch": 0, "uncertainty": {"crop": 3.0, "flip": 4.0}},
        {"event": "epoch_end", "epoch": 1, "step": 2},
        {"step": 3, "epoch": 1, "uncertainty": {"crop": 5.0, "flip": "nan"}},
        {"step": 4, "epoch": 1, "loss": 1.0},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    means = unc.epoch_means(unc.read_log(tmp_path))
    assert means == {"crop": {1: 2.0, 2: 5.0}, "flip": {1: 3.0}}


def _tiny_checkpoint(path, method):
    cfg = load_config(PretrainConfig, None, [*TINY, f"method={method}"])
    ops = ["crop", "flip", "color_jitter", "grayscale", "blur", "solarize"]
    model = build_model(cfg, len(ops))
    head = model.uncertainty_head
    state = {
        "format": FORMAT,
        "backbone": model.backbone.state_dict(),
        "arch": "resnet18",
        "method": method,
        "config": to_dict(cfg),
        "aug_names": ops,
        "masks": torch.zeros(len(ops), 32),
        "mask_kind": "learned",
        "uncertainty_head": head.state_dict() if head is not None else None,
        "epoch": 1,
        "step": 2,
    }
    return save_checkpoint(state, path)


def _args(paths, out):
    parser = argparse.ArgumentParser()
    unc.add_arguments(parser)
    return parser.parse_args(
        [*map(str, paths), "--out", str(out), "--n", "12", "--batch-size", "8", "--device", "cpu"]
    )


def test_command_on_a_tiny_checkpoint_and_skip_without_head(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path / "data"))
    run_dir = tmp_path / "tiny_mast"
    run_dir.mkdir()
    _tiny_checkpoint(run_dir / "last.pt", "mast")
    (run_dir / "log.jsonl").write_text(
        json.dumps({"step": 1, "epoch": 0, "uncertainty": {"crop": 1.0}}) + "\n"
    )
    nounc = _tiny_checkpoint(tmp_path / "nounc.pt", "mast_nounc")
    written = unc.run(_args([run_dir, nounc], tmp_path / "out"))
    assert {p.name for p in written} == {
        "uncertainty_vs_strength.png",
        "uncertainty_per_epoch.png",
        "uncertainty_bins.csv",
        "uncertainty.json",
    }
    assert "skipping" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "tiny_mast" / "uncertainty.json").read_text())
    assert summary["n_images"] == 12 and summary["per_epoch"] == {"crop": {"1": 1.0}}
    crop = summary["per_op"]["crop"]
    # crop always resampled
    assert crop["bins"][0]["count"] == 0 and sum(b["count"] for b in crop["bins"]) == 12
    state = torch.load(run_dir / "last.pt", weights_only=True)
    d1, s1 = unc.evaluate_pairs(state, 4, batch_size=3)
    d2, s2 = unc.evaluate_pairs(state, 4, batch_size=4)
    # batching-invariant
    assert d1.shape == s1.shape == (4, 6) and np.array_equal(d1, d2) and np.allclose(s1, s2)
    assert (
        ((d1 >= 0) & (d1 <= 1)).all() and (s1 >= math.exp(-6)).all() and (s1 <= math.exp(6)).all()
    )


def test_own_strength_of_a_view_against_the_neutral_one():
    ops = ["crop", "flip", "color_jitter", "grayscale", "blur", "solarize"]
    cfg = AugmentConfig()
    view = neutral_params().clone()
    # the neutral view is undistorted
    assert unc.own_strengths(view[None], cfg, ops).abs().max() == 0
    names = list(PARAM_NAMES)
    view[names.index("crop.height")] = view[names.index("crop.width")] = (
        0.5  # a quarter of the image
    )
    view[names.index("flip.applied")] = 1.0
    own = unc.own_strengths(view[None], cfg, ops)[0]
    assert (
        own[0].item() == pytest.approx(0.75) and own[1].item() == 1.0 and own[2:].abs().max() == 0
    )


def test_per_view_evaluation_pairs_each_view_with_its_own_strength(tmp_path, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path / "data"))
    state = torch.load(_tiny_checkpoint(tmp_path / "mast.pt", "mast"), weights_only=True)
    d, s, own, sigma2 = unc.evaluate_pairs(state, 5, batch_size=4, per_view=True)
    # 5 images x 2 views
    assert d.shape == s.shape == (5, 6) and own.shape == sigma2.shape == (
        10,
        6,
    )
    # the pair variance is their mean
    assert np.allclose(s, (sigma2[0::2] + sigma2[1::2]) / 2, rtol=1e-5)
    assert ((own >= 0) & (own <= 1)).all() and (own[:, 0] > 0).any()
