"""A run folder belongs to one process and is never overwritten: locks, --force, corrupt
checkpoints."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.checkpoints import load_checkpoint, save_checkpoint
from core.io import sha256_file
from core.runlock import FolderInUse, RunLock
from downstream.classification.__main__ import main as classification_main
from downstream.detection.__main__ import main as detection_main
from pretrain.__main__ import main as pretrain_main
from tests.pretrain.test_train import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path_factory, monkeypatch):
    cache = str(tmp_path_factory.getbasetemp() / "data")
    monkeypatch.setenv("MAST_DATA_CACHE", cache)
    return {**os.environ, "MAST_DATA_CACHE": cache, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def pretrain(capsys):
    """``python -m pretrain --out OUT [flags] --set TINY... sets...`` in this process: (exit code,
    stderr, stdout)."""

    def call(out, *sets, flags=()):
        capsys.readouterr()
        code = pretrain_main(["--out", str(out), *flags, "--set", *TINY, *sets])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess([], code, captured.out, captured.err)

    return call


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def test_second_process_on_a_folder_in_use_stops_at_once(tmp_path, env, pretrain):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "pretrain", "--out", str(out), "--set", *TINY, "train.epochs=15"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "log.jsonl").is_file() and time.time() < deadline:  # training has begun
        time.sleep(0.05)
    config = (out / "config.yaml").read_text()
    second = pretrain(out, "seed=1")
    still_running = first.poll() is None
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert still_running, "the first run ended before the second started: make it longer"
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    assert last_line(second).startswith(f"error: {out} is in use by process {first.pid} on ")
    assert "wait for it to finish or stop it" in last_line(second)
    assert (out / "config.yaml").read_text() == config  # the second wrote nothing
    steps = [
        r["step"]
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert steps == list(range(1, 61))
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 60 and state["config"]["seed"] == 0
    assert (out / ".lock").read_text() == ""  # released


def test_stale_lock_is_taken_over_with_a_log_line(tmp_path, env, pretrain):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=False,
    )
    pid = int(gone.stdout)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "argv": ["x"]}))
    result = pretrain(out, "train.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"taking over the stale lock of process {pid}" in result.stderr


def test_lock_in_this_process_refuses_a_second_holder(tmp_path):
    busy = rf"{tmp_path} is in use by process {os.getpid()} "
    with RunLock(tmp_path, "test"), pytest.raises(FolderInUse, match=busy):
        RunLock(tmp_path, "other", wait=0).acquire()
    RunLock(tmp_path, "again").acquire().release()  # free once released


def test_detection_and_classification_folders_are_locked(tmp_path, capsys):
    work = tmp_path / "work"
    folder = work / "embedded-frcnn_random-init_resnet18w16_s0"
    with RunLock(folder, "someone else"):
        code = detection_main(
            [
                "--protocol",
                "embedded-frcnn",
                "--arch",
                "resnet18w16",
                "--floor",
                "--records",
                str(tmp_path / "det.jsonl"),
                "--out",
                str(work),
                "--data-root",
                str(tmp_path / "d"),
                "--set",
                "data.n=6",
                "data.image_size=64",
            ]
        )
        assert code == 2
        assert f"error: {folder} is in use by process {os.getpid()}" in capsys.readouterr().err
        code = classification_main(
            [
                "--arch",
                "resnet18w4",
                "--floor",
                "--out",
                str(folder),
                "--records",
                str(tmp_path / "cls.jsonl"),
            ]
        )
        assert (
            code == 2
            and f"error: {folder} is in use by process {os.getpid()}" in capsys.readouterr().err
        )
    assert not (tmp_path / "det.jsonl").exists() and not (tmp_path / "cls.jsonl").exists()


def test_finished_run_is_never_overwritten(tmp_path, env, pretrain, capsys):
    out = tmp_path / "run"
    assert pretrain(out).returncode == 0
    digest = sha256_file(out / "last.pt")
    again = pretrain(out, "seed=1", "train.max_steps=2")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert last_line(again) == (
        f"error: {out} holds a finished run (last.pt at step 12, epoch 3 of 3): start over "
        "with --force (make: FORCE=1), which moves it to stale/ beside the folder, or "
        "choose another --out"
    )
    assert sha256_file(out / "last.pt") == digest
    auto = pretrain(out, flags=["--auto-resume"])
    assert (
        auto.returncode == 0
        and "already finished" in auto.stdout
        and sha256_file(out / "last.pt") == digest
    )
    forced = pretrain(out, "seed=1", "train.max_steps=2", flags=["--force"])
    assert forced.returncode == 0, forced.stderr[-2000:]
    (aside,) = (tmp_path / "stale").iterdir()
    assert aside.name.startswith("run-") and sha256_file(aside / "last.pt") == digest
    assert (aside / "log.jsonl").is_file() and (aside / "config.yaml").is_file()
    assert load_checkpoint(out / "last.pt")["step"] == 2
    with pytest.raises(SystemExit) as both:
        pretrain(out, flags=["--force", "--resume"])
    assert both.value.code == 2 and "--force starts over" in capsys.readouterr().err


def test_unfinished_run_asks_for_resume(tmp_path, env, pretrain):
    out = tmp_path / "run"
    assert pretrain(out, "train.max_steps=6").returncode == 0
    again = pretrain(out)
    assert again.returncode == 2
    assert last_line(again) == (
        f"error: {out} holds an unfinished run (last.pt at step 6, epoch 1 of 3): continue "
        "it with --resume (or --auto-resume), or start over with --force (make: FORCE=1), "
        "which moves it to stale/ beside the folder"
    )


def test_a_run_of_older_arithmetic_is_not_resumed(tmp_path, env, pretrain):
    """A checkpoint whose numerics version this code computes differently (core/numerics.py) would
    continue with other arithmetic, or fail on the optimiser's groups: one line says so, and
    nothing is written."""
    out = tmp_path / "run"
    assert pretrain(out, "train.max_steps=6").returncode == 0
    state = load_checkpoint(out / "last.pt")
    state["numerics"] = 1  # older than the change every config took (version 2)
    save_checkpoint(state, out / "last.pt")
    digest = sha256_file(out / "last.pt")
    result = pretrain(out, flags=["--resume"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result).startswith(
        f"error: {out / 'last.pt'} was computed with numerics version 1, and this code computes "
        "this config with version"
    )
    assert "start over with --force" in last_line(result)
    assert sha256_file(out / "last.pt") == digest


def test_corrupt_last_checkpoint_offers_the_newest_readable_epoch(tmp_path, env, pretrain):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert pretrain(straight, "train.keep_every=1").returncode == 0
    assert pretrain(broken, "train.keep_every=1", "train.max_steps=10").returncode == 0
    last = broken / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # a crash mid-copy, a full disk
    (broken / "epoch_2.pt").write_bytes(b"garbage")
    result = pretrain(broken, flags=["--resume"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result).startswith(
        f"error: {last} is not a readable torch checkpoint (truncated or corrupt?)"
    )
    offer = f"; resume from the newest readable one with --resume-from {broken / 'epoch_1.pt'}"
    assert last_line(result).endswith(offer)
    resumed = pretrain(
        broken, "train.max_steps=null", flags=["--resume-from", str(broken / "epoch_1.pt")]
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(last)
    assert a["step"] == b["step"] == 12
    assert all((a["backbone"][k] == b["backbone"][k]).all() for k in a["backbone"])
