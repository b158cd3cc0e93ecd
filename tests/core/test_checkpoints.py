import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

from core.backbones import backbone_state_dict, build_backbone
from core.checkpoints import (
    FORMAT,
    CheckpointError,
    describe,
    export_backbone,
    load_checkpoint,
    load_file,
    main,
    save_checkpoint,
)


def make_state(value: float = 1.0, size: int = 4) -> dict:
    return {
        "format": FORMAT,
        "backbone": {"w": torch.full((size,), value)},
        "arch": "resnet18",
        "method": "mast",
        "config": {"seed": 0},
        "epoch": int(value),
        "masks": None,
    }


def test_round_trip(tmp_path):
    path = save_checkpoint(make_state(2.0), tmp_path / "ck.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["backbone"]["w"], torch.full((4,), 2.0)) and state["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_exception_midway_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(make_state(1.0), tmp_path / "ck.pt")
    before = path.read_bytes()

    def half_then_fail(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make_state(2.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_killed_process_midway_keeps_previous_file(tmp_path):
    """A save killed with SIGKILL in the middle of writing leaves the old checkpoint loadable."""
    path = tmp_path / "ck.pt"
    save_checkpoint(make_state(1.0), path)
    script = textwrap.dedent(f"""
        import time, torch
        from core.checkpoints import save_checkpoint, FORMAT
        real_save = torch.save
        def slow_save(obj, handle):
            handle.write(b"PK\\x03\\x04" + b"x" * 100000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        state = {{"format": FORMAT, "backbone": {{}}, "arch": "a", "method": "m", "config": {{}}}}
        save_checkpoint(state, {str(path)!r})
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [p for p in tmp_path.iterdir() if p.name != "ck.pt"]
        assert len(temps) == 1 and temps[0].stat().st_size > 100000  # the new file was half written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert load_checkpoint(path)["epoch"] == 1
    # The next save removes the stale temp file of the killed one.
    save_checkpoint(make_state(3.0), path)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"] and load_checkpoint(path)["epoch"] == 3


def test_save_refuses_incomplete_state(tmp_path):
    state = make_state()
    del state["arch"]
    with pytest.raises(CheckpointError, match=r"without \['arch'\]"):
        save_checkpoint(state, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(bad)
    good = save_checkpoint(make_state(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Evil()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"\(posix.system\).*unpickling an untrusted file can run arbitrary code",
    ):
        load_file(path)
    newer = tmp_path / "evil4.pt"
    torch.save({"payload": Evil()}, newer, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="unpickling an untrusted file"):
        load_file(newer)


def test_foreign_format_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="is not a mast-suite/1 checkpoint"):
        load_checkpoint(path)
    assert set(load_file(path)) == {"conv1.weight"}


def test_export_loads_into_torchvision(tmp_path):
    torch.manual_seed(0)
    model = build_backbone("resnet18")
    state = make_state()
    state["backbone"] = backbone_state_dict(model)
    ckpt = save_checkpoint(state, tmp_path / "ck.pt")
    out = export_backbone(ckpt, tmp_path / "backbone.pth")
    reference = torchvision.models.resnet18()
    result = reference.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and result.unexpected_keys == []
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), reference.eval()(x))


def test_cli_inspect_and_errors(tmp_path, capsys):
    path = save_checkpoint(make_state(), tmp_path / "ck.pt")
    assert main(["inspect", str(path)]) == 0
    summary = describe(load_checkpoint(path))
    assert (
        '"backbone_tensors": 1' in capsys.readouterr().out and summary["backbone_parameters"] == 4
    )
    assert main(["inspect", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
