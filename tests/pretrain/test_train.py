"""The pretraining loop end to end on tiny FactorShapes runs: checkpoints, logs, resume, NaN, DDP,
export."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from core.checkpoints import import_backbone, load_backbone, load_checkpoint
from core.config import load_config
from core.methods import METHODS
from core.views import ViewMaker
from pretrain.__main__ import main
from pretrain.config import PretrainConfig
from pretrain.losses import MASTLoss
from pretrain.losses.looc import LooCLoss
from pretrain.train import Trainer, TrainingDiverged, build_loss, build_model
from tests.pretrain.ddp_worker import pair_losses

TINY = [
    "data.image_size=32",
    "data.n=64",
    "data.num_workers=0",
    "model.arch=resnet18",
    "model.base_width=4",
    "model.expander=32-32",
    "optim.name=adamw",
    "optim.base_lr=0.01",
    "optim.warmup_epochs=1",
    "train.epochs=3",
    "train.batch_size=16",
    "train.log_every=1",
]
DESIGN_KEYS = {
    "format",
    "backbone",
    "arch",
    "method",
    "expander",
    "masks",
    "aug_names",
    "uncertainty_head",
    "heads",
    "target",
    "config",
    "epoch",
    "step",
    "optimizer",
    "scaler",
    "rng",
    "git_commit",
}


@pytest.fixture
def data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data"))


def tiny(*extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*TINY, *extra])


def fit(cfg: PretrainConfig, out: Path, resume: bool = False) -> Trainer:
    trainer = Trainer(cfg, out)
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer


#: what a method needs besides its name (LooC trains on its own views)
METHOD_SETTINGS = {"looc": ["views.mode=looc"]}


@pytest.mark.parametrize("method", list(METHODS))
def test_run_writes_checkpoint_and_log(tmp_path, data_cache, method):
    cfg = tiny(f"method={method}", *METHOD_SETTINGS.get(method, []))
    trainer = fit(cfg, tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    assert (
        DESIGN_KEYS <= set(state)
        and state["method"] == method
        and state["step"] == 12
        and state["epoch"] == 3
    )
    assert state["aug_names"] == ["crop", "flip", "color_jitter", "grayscale", "blur", "solarize"]
    assert (state["masks"] is None) == (not cfg.uses_masks)
    assert (state["uncertainty_head"] is None) == (not cfg.uses_uncertainty)
    if method == "mast_fixed":
        assert torch.equal(state["masks"].sum(0), torch.ones(32))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13)) and all(
        r["img_per_s"] > 0 for r in steps
    )
    if cfg.uses_masks or method == "vicreg":
        assert {"inv", "var", "cov"} <= set(steps[0])
    elif state["heads"] is None:  # a two-view baseline logs the terms its loss returns
        _, terms = build_loss(cfg)(torch.randn(16, 32), torch.randn(16, 32))
        assert set(terms) <= set(steps[0]) and all(math.isfinite(r["loss"]) for r in steps)
    else:  # a baseline with prediction heads logs the terms its loss returns too
        model = build_model(cfg, 6, state["aug_names"])
        maker = ViewMaker(cfg.augment, cfg.views, 32)
        generator = torch.Generator().manual_seed(0)
        params = torch.stack([maker.sample(generator, 64, 64) for _ in range(16)])
        out = model(torch.rand(maker.num_views, 16, 3, 32, 32), params)
        targets = {"targets": out["z_target"]} if "z_target" in out else {}
        loss = build_loss(cfg, state["aug_names"])
        _, terms = loss(*out["z"][:2], predictions=out["heads"], params=params, **targets)
        assert set(terms) <= set(steps[0]) and all(math.isfinite(r["loss"]) for r in steps)
    if cfg.uses_masks:
        assert set(steps[0]["gate_rate"]) == set(state["aug_names"]) and "strength" in steps[0]
        assert len(list((tmp_path / "masks").glob("epoch_*.pt"))) == 3
    assert trainer.step == 12


def test_resume_after_interruption_equals_uninterrupted(tmp_path, data_cache):
    fit(tiny(), tmp_path / "straight")
    fit(tiny("train.max_steps=6"), tmp_path / "broken")  # stops mid-epoch 2 (4 steps per epoch)
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["step"] == 6
    fit(tiny(), tmp_path / "broken", resume=True)
    a, b = (
        load_checkpoint(tmp_path / "straight" / "last.pt"),
        load_checkpoint(tmp_path / "broken" / "last.pt"),
    )
    assert a["step"] == b["step"] == 12
    for part in ("backbone", "expander", "uncertainty_head"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    assert torch.equal(a["masks"], b["masks"])


@pytest.mark.parametrize("method", ["augself", "byol", "looc"])
def test_resume_restores_heads_and_target(tmp_path, data_cache, method):
    extra = [f"method={method}", "train.epochs=2", *METHOD_SETTINGS.get(method, [])]
    fit(tiny(*extra), tmp_path / "straight")
    fit(tiny(*extra, "train.max_steps=5"), tmp_path / "broken")
    fit(tiny(*extra), tmp_path / "broken", resume=True)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "broken"))
    assert a["step"] == b["step"] == 8 and set(a["heads"]) == set(b["heads"])
    assert (a["target"] is None) == (method != "byol")
    for part in ("backbone", "heads", *(["target"] if method == "byol" else [])):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


def test_same_seed_same_weights_other_seed_differs(tmp_path, data_cache):
    fit(tiny("train.max_steps=3"), tmp_path / "a")
    fit(tiny("train.max_steps=3"), tmp_path / "b")
    fit(tiny("train.max_steps=3", "seed=1"), tmp_path / "c")
    a, b, c = (load_checkpoint(tmp_path / n / "last.pt")["backbone"]["conv1.weight"] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_compile_is_ignored_on_the_cpu(tmp_path, data_cache):
    # inductor's CPU convolutions reach the oneDNN kernel docs/reliability.md describes (an abort)
    trainer = fit(tiny("train.max_steps=1", "train.compile=true"), tmp_path / "run")
    assert trainer.net is trainer.model
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["train"]["compile"] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_network_trains_like_eager_and_saves_plain_keys(tmp_path, data_cache):
    cuda = ["device=cuda", "train.amp=none"]
    fit(tiny("train.max_steps=2", *cuda), tmp_path / "eager")
    compiled = fit(tiny("train.max_steps=2", "train.compile=true", *cuda), tmp_path / "compiled")
    assert compiled.net is not compiled.model  # the wrapper trains, the module is saved
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("eager", "compiled"))
    for part in ("backbone", "expander"):
        assert a[part].keys() == b[part].keys()  # no "_orig_mod." prefix
        for key, value in a[part].items():  # fused kernels: the last bits differ, no more
            torch.testing.assert_close(b[part][key], value, rtol=1e-3, atol=1e-4)
    losses = [
        json.loads((tmp_path / n / "log.jsonl").read_text().splitlines()[-1])["loss"]
        for n in ("eager", "compiled")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_nan_stops_with_step_and_term_and_keeps_checkpoint(tmp_path, data_cache, monkeypatch):
    real = MASTLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        total, terms = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:
            terms["inv"] = terms["inv"] * float("nan")
            total = total + terms["inv"]
        return total, terms

    monkeypatch.setattr(MASTLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"not finite at step 6 \(terms: inv=nan\)"):
        fit(tiny(), tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")  # the epoch-1 checkpoint, intact
    assert state["step"] == 4


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pretrain", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_cli_errors_are_one_line(tmp_path, data_cache):
    typo = run_cli("--out", str(tmp_path / "a"), "--set", "train.epoch=3")
    assert typo.returncode != 0 and typo.stderr.strip().splitlines()[-1].startswith(
        "config error: unknown config key 'train.epoch' (did you mean 'epochs'?)"
    )
    missing = run_cli(
        "--out",
        str(tmp_path / "b"),
        "--set",
        *TINY,
        "data.dataset=folder",
        f"data.root={tmp_path / 'nowhere'}",
    )
    assert missing.returncode == 2
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"error: image folder not found: {tmp_path / 'nowhere'} "
        "(check data.root or pass --set data.root=PATH)"
    )
    assert not (tmp_path / "b" / "last.pt").exists()
    no_ckpt = run_cli("--out", str(tmp_path / "c"), "--resume", "--set", *TINY)
    assert no_ckpt.returncode == 2 and "--resume: no checkpoint at" in no_ckpt.stderr


def test_export_matches_torchvision_features(tmp_path, data_cache):
    fit(tiny("model.base_width=64", "train.max_steps=1", "method=vicreg"), tmp_path)
    assert main(["export", str(tmp_path / "last.pt"), str(tmp_path / "backbone.pth")]) == 0
    reference = torchvision.models.resnet18()
    result = reference.load_state_dict(
        torch.load(tmp_path / "backbone.pth", weights_only=True), strict=False
    )
    assert result.missing_keys == ["fc.weight", "fc.bias"] and not result.unexpected_keys
    reference.fc = torch.nn.Identity()
    from core.backbones import build_backbone

    ours = build_backbone("resnet18")
    ours.load_state_dict(load_checkpoint(tmp_path / "last.pt")["backbone"])
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(ours.eval()(x), reference.eval()(x))


@pytest.mark.parametrize("method", ["augself", "vicreg_equimod", "byol", "looc"])
def test_baselines_with_heads_export_a_backbone_that_imports_strictly(tmp_path, data_cache, method):
    # what `make compare` and the detection hand-off read: the bare backbone, heads and target aside
    fit(tiny(f"method={method}", "train.max_steps=2", *METHOD_SETTINGS.get(method, [])), tmp_path)
    assert main(["export", str(tmp_path / "last.pt"), str(tmp_path / "backbone.pth")]) == 0
    weights, report = import_backbone(tmp_path / "backbone.pth")
    state = load_checkpoint(tmp_path / "last.pt")
    assert set(weights) == set(state["backbone"]) and not report.dropped
    assert all(torch.equal(weights[k], state["backbone"][k]) for k in weights)
    # the suite checkpoint itself loads too, its heads and target dropped
    x = torch.randn(2, 3, 32, 32)
    from_suite = load_backbone(tmp_path / "last.pt").model.eval()(x)
    from_export = load_backbone(tmp_path / "backbone.pth").model.eval()(x)
    assert torch.equal(from_suite, from_export)


def torchrun(*args, timeout=300):
    """Run torchrun in its own process group, so that a hang kills its workers too, not just
    torchrun."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_two_process_losses_equal_one_process(tmp_path):
    result = torchrun(str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path / "rank"))
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    z = torch.randn(2, 16, 12, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(2, 16, 3, dtype=torch.float64, requires_grad=True)
    gates = (torch.rand(16, 3) > 0.3).double()
    theta = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    pairs = {}
    for name, loss in pair_losses().items():
        value, _ = loss(z[0], z[1])
        pairs[name] = (value, torch.autograd.grad(value, z)[0])
    assert {"vicreg", *ranks[0]["pairs"]} == set(pairs)
    mast, _ = MASTLoss()(z, torch.tensor([[0, 1]] * 3), gates, torch.sigmoid(theta), log_var)
    g_z, g_lv, g_theta = torch.autograd.grad(mast, (z, log_var, theta))
    # DDP averages gradients over processes, so the one-process loss is the mean of the process
    # losses, each process's embedding gradient (which sums every process's loss) / 2 is its rows'
    # gradient, and the masks' gradient is the mean over processes.
    for name, (value, grad) in pairs.items():
        (v0, g0), (v1, g1) = ranks[0]["pairs"][name], ranks[1]["pairs"][name]
        assert (v0 + v1).item() / 2 == pytest.approx(value.item(), abs=1e-5), name
        for g, rows in ((g0, slice(0, 8)), (g1, slice(8, 16))):
            assert torch.allclose(g / 2, grad[:, rows], atol=1e-5), name
    assert (ranks[0]["mast"] + ranks[1]["mast"]).item() / 2 == pytest.approx(mast.item(), abs=1e-5)
    for r, rows in enumerate((slice(0, 8), slice(8, 16))):
        assert torch.allclose(ranks[r]["g_z"] / 2, g_z[:, rows], atol=1e-5)
        assert torch.allclose(ranks[r]["g_lv"] / 2, g_lv[:, rows], atol=1e-5)
    assert torch.allclose((ranks[0]["g_theta"] + ranks[1]["g_theta"]) / 2, g_theta, atol=1e-5)
    spaces = torch.randn(3, 4, 16, 12, dtype=torch.float64, requires_grad=True)
    looc, _ = LooCLoss(0.2)(spaces[0, 0], spaces[0, 1], {"spaces": spaces})
    (g_spaces,) = torch.autograd.grad(looc, spaces)
    assert (ranks[0]["looc"] + ranks[1]["looc"]).item() / 2 == pytest.approx(looc.item(), abs=1e-5)
    for r, rows in enumerate((slice(0, 8), slice(8, 16))):
        assert torch.allclose(ranks[r]["g_spaces"] / 2, g_spaces[:, :, rows], atol=1e-5)


@pytest.mark.parametrize("method", ["mast", "byol"])  # byol: prediction heads and a target
def test_two_process_training_run(tmp_path, data_cache, method):
    result = torchrun(
        "-m",
        "pretrain",
        "--out",
        str(tmp_path),
        "--set",
        *TINY,
        "train.epochs=1",
        "device=cpu",
        f"method={method}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["world_size"] == 2 and state["step"] == 4  # 64 images, 2 processes x 8 per step
    assert "done: step 4" in result.stdout
    assert (state["target"] is not None) == (method == "byol")


def test_contrast_mask_objective_trains_and_logs_its_term(tmp_path, data_cache):
    fit(tiny("loss.mask_objective=contrast"), tmp_path)
    steps = [
        r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert len(steps) == 12 and all(math.isfinite(r["mask_excess"]) for r in steps)
    for row in steps:  # the embedding's part leaves the head's fit and the masks' objective aside
        side = 25.0 * (row["unc_fit"] + row["mask_excess"])
        assert row["embedding_loss"] == pytest.approx(row["loss"] - side, rel=1e-9, abs=1e-9)
    snapshots = sorted((tmp_path / "masks").glob("epoch_*.pt"))
    start, end = (torch.load(p, weights_only=True)["masks"] for p in (snapshots[0], snapshots[-1]))
    assert not torch.equal(start, end)  # the masks move


@pytest.mark.parametrize("method", ["mast_nounc", "mast_fixed"])
def test_and_combination_trains_and_logs_its_assignment(tmp_path, data_cache, method):
    fit(
        tiny(
            f"method={method}", "loss.combine=and", "loss.uncertainty=false", "views.resample=all"
        ),
        tmp_path,
    )
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["mask_kind"] == ("assign" if method == "mast_nounc" else "assign_fixed")
    # shared + 5 non-crop ops
    assert state["masks"].shape == (6, 32) and state["uncertainty_head"] is None
    steps = [
        r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    owned = ["flip", "color_jitter", "grayscale", "blur", "solarize"]
    assert len(steps) == 12 and all(set(r["assign_share"]) == set(owned) for r in steps)
    assert all(0 < r["excused"] < 1 for r in steps)
    if method == "mast_nounc":
        assert all(
            set(r["attribution"]) == set(owned) and math.isfinite(r["assign"]) for r in steps
        )
        for row in steps:  # the assignment's objective (weight 1) is not the embedding's
            assert row["embedding_loss"] == pytest.approx(
                row["loss"] - row["assign"], rel=1e-9, abs=1e-9
            )
        snapshots = sorted((tmp_path / "masks").glob("epoch_*.pt"))
        start, end = (
            torch.load(p, weights_only=True)["masks"] for p in (snapshots[0], snapshots[-1])
        )
        assert not torch.equal(start, end)
    else:
        assert torch.equal(state["masks"].sum(0), torch.ones(32)) and "assign" not in steps[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["views.mode=factorized"], "needs views.mode=pair"),
        (["method=mast"], "no uncertainty weighting"),
    ],
)
def test_and_combination_limits_are_config_errors(tmp_path, data_cache, extra, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny("method=mast_nounc", "loss.combine=and", *extra), tmp_path)


def test_tempered_weights_log_their_effective_sample_size(tmp_path, data_cache):
    fit(tiny("loss.min_ess=0.9"), tmp_path)
    steps = [
        r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert all(
        min(r["ess"].values()) >= 0.9 - 1e-6 and max(r["temper"].values()) <= 1.0 for r in steps
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_narrowest_width_trains_on_avx2_kernels(tmp_path, data_cache, threads):
    # The run that exposed the channels_last defect (docs/reliability.md), through the suite's
    # loop: base width 4, batch 16 at 32 px, 40 AdamW steps, on oneDNN's AVX2 kernels (capped here,
    # native on AVX2-only CPUs), where channels_last corrupted the heap.
    env = {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OMP_NUM_THREADS": str(threads),
        "MAST_PROBE_CACHE": str(tmp_path / "probes"),
    }
    result = run_cli(
        "--out",
        str(tmp_path / "run"),
        "--set",
        *TINY,
        "train.epochs=10",
        "train.log_every=40",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (
        run["memory_format"]["memory_format"] == "contiguous"
        and "AVX2" in run["memory_format"]["reason"]
    )
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 40 and state["machine"]["memory_format"] == "contiguous"
    assert all(torch.isfinite(v).all() for v in state["backbone"].values() if v.is_floating_point())


@pytest.mark.parametrize("channels_last", [True, False])
def test_both_memory_formats_train_alike(tmp_path, data_cache, channels_last):
    from core.memory_format import choose

    fit(tiny("train.max_steps=3", "train.channels_last=false"), tmp_path / "contiguous")
    trainer = fit(
        tiny("train.max_steps=3", f"train.channels_last={str(channels_last).lower()}"),
        tmp_path / "run",
    )
    expected = choose(torch.device("cpu"), "resnet18", 4, channels_last)
    assert trainer.memory == expected
    assert (
        trainer.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        == expected.channels_last
    )
    a = load_checkpoint(tmp_path / "contiguous" / "last.pt")["backbone"]
    b = load_checkpoint(tmp_path / "run" / "last.pt")["backbone"]
    for key in a:  # the same training up to float rounding
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-5), key


@pytest.mark.parametrize("method", ["vicreg", "looc"])
def test_views_rendered_on_the_device_train_the_same_weights(tmp_path, data_cache, method):
    extra = [f"method={method}", "train.max_steps=3", *METHOD_SETTINGS.get(method, [])]
    fit(tiny(*extra), tmp_path / "loader")
    trainer = fit(tiny(*extra, "views.render=device"), tmp_path / "device")
    # the loader hands the raw images (stacked: FactorShapes images share one size) and parameters
    images, params = next(iter(trainer.loader))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert params.shape[:2] == (16, trainer.views.num_views)
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["backbone"] for n in ("loader", "device"))
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between loader and device rendering"


def test_jpegs_decoded_on_the_device_train_the_same_weights(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(32):  # JPEGs of two sizes, in RGB and grey, and one PNG: mixed batches
        pixels = rng.integers(0, 256, (40, 48, 3) if i % 2 else (36, 36, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L" if i % 4 == 1 else "RGB")
        image.save(tmp_path / "images" / f"{i:02d}.{'png' if i == 5 else 'jpg'}")
    data = ["data.dataset=folder", f"data.root={tmp_path / 'images'}", "views.render=device"]
    fit(tiny(*data, "train.max_steps=3"), tmp_path / "loader")
    trainer = fit(tiny(*data, "train.max_steps=3", "data.decode=device"), tmp_path / "device")
    images, params = next(iter(trainer.loader))
    assert isinstance(images, list) and params.shape[:2] == (16, trainer.views.num_views)
    assert sum(i.dim() == 1 for i in images) >= 14  # the JPEGs reach the step undecoded
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["backbone"] for n in ("loader", "device"))
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between loader and device decoding"
    with pytest.raises(ValueError, match="data.decode: device needs views.render: device"):
        tiny("data.decode=device")


def test_views_render_typo_is_a_config_error():
    with pytest.raises(ValueError, match="'views.render' = 'gpu' is not allowed; choose one of"):
        tiny("views.render=gpu")
