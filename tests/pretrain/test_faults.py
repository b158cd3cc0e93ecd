"""Fault injection: a real pretraining process is SIGKILLed at chosen points (core/faults.py) or
from outside; every checkpoint left behind is readable and the resumed run ends bit-identical to an
uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.checkpoints import CheckpointError, load_checkpoint
from core.io import TMP_PREFIX
from pretrain.__main__ import main
from tests.pretrain.test_train import TINY

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ["--config", str(ROOT / "configs/pretrain/mast_r18w16_b128_16e_shapes.yaml")]


def command(out: Path, config: list[str], sets: list[str], *flags: str) -> list[str]:
    return [sys.executable, "-m", "pretrain", *config, "--out", str(out), *flags, "--set", *sets]


def environment(tmp_path_factory, threads: int, fault: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "MAST_DATA_CACHE": str(tmp_path_factory.getbasetemp() / "data"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": str(threads),
    }
    env.pop("MAST_FAULT", None)
    return {**env, "MAST_FAULT": fault} if fault else env


def tensors(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint that a resumed run must reproduce: weights, masks and optimiser
    state."""
    out = {
        f"{part}.{k}": v
        for part in ("backbone", "expander", "uncertainty_head")
        for k, v in (state[part] or {}).items()
    }
    out["masks"] = state["masks"]
    for index, slots in state["optimizer"]["state"].items():
        out.update({f"optimizer.{index}.{k}": v for k, v in slots.items() if torch.is_tensor(v)})
    return out


def max_difference(a: dict, b: dict) -> float:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    return max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta)


def check_left_behind(out: Path) -> list[str]:
    """Every checkpoint file in ``out`` loads; a torn temporary file is never one of them."""
    seen = []
    for path in sorted(out.glob("*.pt")):
        if not path.name.startswith(TMP_PREFIX):
            load_checkpoint(path)
            seen.append(path.name)
    return seen


def kill_and_resume(
    out: Path,
    config: list[str],
    sets: list[str],
    env: dict,
    fault: str | None,
    after_first_checkpoint_s: float | None = None,
    in_process: bool = False,
) -> dict:
    """Run until killed (by ``fault``, or from outside some seconds after last.pt first appears),
    check what is left, resume (in this process when ``in_process``), and return the final
    checkpoint."""
    if fault:
        killed = subprocess.run(
            command(out, config, sets),
            capture_output=True,
            text=True,
            check=False,
            env={**env, "MAST_FAULT": fault},
            timeout=1800,
        )
    else:
        proc = subprocess.Popen(
            command(out, config, sets),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        while not (out / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(after_first_checkpoint_s)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        killed = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "last.pt" in check_left_behind(out)
    if fault and fault.startswith("checkpoint_write"):
        # the kill came mid-write: a partial temporary file
        (torn,) = out.glob(f"{TMP_PREFIX}last.pt.*")
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(torn)
    if in_process:
        assert main(command(out, config, sets, "--resume")[3:]) == 0
    else:
        resumed = subprocess.run(
            command(out, config, sets, "--resume"),
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=1800,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the torn temporary file was cleared by the next save
    assert not list(out.glob(f"{TMP_PREFIX}*"))
    return load_checkpoint(out / "last.pt")


# 4 steps an epoch, 12 in all; checkpoints at steps 2 (mid-epoch), 4 (epoch end), 6, 8, 10, 12.
FAST = [*TINY, "train.checkpoint_every_steps=2"]
FAST_POINTS = {
    "mid-epoch, step 7": "step:7",
    "right after the epoch-1 checkpoint": "checkpoint_saved:2",
    "writing the mid-epoch checkpoint of step 6": "checkpoint_write:3",
}


@pytest.fixture
def data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MAST_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.fixture
def fast_reference(tmp_path_factory, data_cache):
    out = tmp_path_factory.getbasetemp() / "fault-reference"
    # one uninterrupted run (in this process: 1 thread, as the children)
    if not (out / "last.pt").is_file():
        assert main(command(out, [], FAST)[3:]) == 0
    return load_checkpoint(out / "last.pt")


@pytest.mark.parametrize("where", FAST_POINTS)
def test_killed_run_resumes_bit_identical(tmp_path, tmp_path_factory, fast_reference, where):
    final = kill_and_resume(
        tmp_path / "run",
        [],
        FAST,
        environment(tmp_path_factory, 1),
        FAST_POINTS[where],
        in_process=True,
    )
    assert final["step"] == fast_reference["step"] == 12
    assert max_difference(final, fast_reference) == 0.0


# The embedded MAST config on the full pretrain split (312 steps an epoch at batch 32), 2 threads;
# checkpoints every 100 steps and at each epoch end: 100, 200, 300, 312, 412, ...
SLOW = ["seed=7", "train.epochs=2", "train.batch_size=32", "train.checkpoint_every_steps=100"]
SLOW_POINTS = {
    "mid-epoch, step 150": "step:150",
    "right after the epoch-1 checkpoint": "checkpoint_saved:4",
    "writing the mid-epoch checkpoint of step 200": "checkpoint_write:2",
    "writing the epoch-1 checkpoint": "checkpoint_write:4",
    "from outside, 3 s after last.pt first appears": None,
}


@pytest.mark.slow
def test_killed_embedded_run_resumes_bit_identical_at_five_points(tmp_path, tmp_path_factory):
    env = environment(tmp_path_factory, 2)
    done = subprocess.run(
        command(tmp_path / "reference", EMBEDDED, SLOW),
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = load_checkpoint(tmp_path / "reference" / "last.pt")
    differences = {}
    for i, (where, fault) in enumerate(SLOW_POINTS.items()):
        final = kill_and_resume(
            tmp_path / f"run{i}", EMBEDDED, SLOW, env, fault, after_first_checkpoint_s=3.0
        )
        assert final["step"] == reference["step"] == 624
        differences[where] = max_difference(final, reference)
    print(differences)
    assert all(value == 0.0 for value in differences.values()), differences
