"""Seeding, RNG state, device selection, JSON-lines logs and the environment check."""

import json
import random
import sys

import numpy as np
import pytest
import torch

from core import env
from core.backbones import build_backbone
from core.device import select_device
from core.logs import JsonlLogger, read_jsonl
from core.seeding import make_generator, rng_state, seed_everything, set_rng_state


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_numbers_and_model():
    seed_everything(5)
    a, model_a = draw(), build_backbone("resnet18", base_width=8)
    seed_everything(5)
    b, model_b = draw(), build_backbone("resnet18", base_width=8)
    seed_everything(6)
    c = draw()
    assert a == b and a != c
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model_a.eval()(x), model_b.eval()(x))
    assert torch.equal(
        torch.randperm(10, generator=make_generator(1)),
        torch.randperm(10, generator=make_generator(1)),
    )


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    seed_everything(1)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = draw()
    draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draw() == expected


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available here: use --set device=cpu"):
            select_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        select_device("gpu0")


def test_jsonl_logger(tmp_path):
    path = tmp_path / "log.jsonl"
    with JsonlLogger(path) as logger:
        logger.log(
            step=1,
            loss=torch.tensor(0.5),
            terms={"inv": np.float32(0.25)},
            vec=torch.ones(2),
            bad=float("nan"),
        )
    JsonlLogger(tmp_path / "other.jsonl", enabled=False).log(step=1)
    rows = read_jsonl(path)
    assert (
        rows[0]["loss"] == 0.5
        and rows[0]["terms"] == {"inv": 0.25}
        and rows[0]["vec"] == [1.0, 1.0]
    )
    assert rows[0]["bad"] == "nan" and "time" in rows[0]
    assert not (tmp_path / "other.jsonl").exists()
    with open(path, "a") as handle:
        handle.write('{"step": 2, "lo')  # a run killed mid-line
    assert len(read_jsonl(path)) == 1


def test_stack_check_runs_resnet50_and_mmcv_ops():
    numbers = env.check_stack()
    assert set(numbers) == {"resnet50_logit_sum", "roi_align_sum"}
    assert env.versions()["mmcv"] == "2.1.0" and env.versions()["mmdet"] == "3.3.0"


def test_missing_mmcv_ops_say_run_make_setup(monkeypatch):
    # what an mmcv without compiled ops looks like
    monkeypatch.setitem(sys.modules, "mmcv.ops", None)
    with pytest.raises(env.MissingOpsError, match="run `make setup`"):
        env.require_mmcv_ops()


def test_env_cli_reports_versions(capsys):
    assert env.main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"].startswith("2.14")
