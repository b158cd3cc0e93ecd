"""The CPU memory format choice: the rule, the probe child, and its verdict against the raw oneDNN
defect."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from core import memory_format as mf
from core.backbones import arch_of, build_backbone

AVX512 = "Intel AVX-512 with Intel DL Boost"


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAST_PROBE_CACHE", str(tmp_path / "probes"))
    mf._CHOSEN.clear()
    yield tmp_path / "probes"
    mf._CHOSEN.clear()


@pytest.mark.parametrize(
    "result, channels_last, words",
    [
        ({"isa": AVX512, "max_rel_diff": 2e-6}, True, "faster"),
        ({"isa": "Intel AVX2", "max_rel_diff": 2e-6}, False, "AVX2-class"),
        ({"isa": "Intel AVX2", "crashed": "signal SIGABRT"}, False, "crashed (signal SIGABRT)"),
        ({"isa": AVX512, "crashed": "signal SIGSEGV"}, False, "crashed (signal SIGSEGV)"),
        ({"isa": AVX512, "max_rel_diff": 0.74}, False, "differ by 0.74"),
        ({"isa": "unknown", "max_rel_diff": 0.0}, False, "AVX2-class"),
        ({"isa": "Intel AVX2", "skipped": "AVX2-class kernels"}, False, "was not tried"),
    ],
)
def test_verdict(result, channels_last, words):
    choice = mf.verdict(result)
    assert choice.channels_last is channels_last and words in choice.reason
    assert choice.memory_format == (
        torch.channels_last if channels_last else torch.contiguous_format
    )


def test_cuda_and_not_requested_need_no_probe(probe_cache):
    assert mf.choose(torch.device("cuda", 0), "resnet18", 4).channels_last
    off = mf.choose(torch.device("cpu"), "resnet18", 4, requested=False)
    assert not off.channels_last and off.reason == "train.channels_last is false"
    assert not probe_cache.exists()


def test_arch_of_reads_the_backbone():
    assert arch_of(build_backbone("resnet18", base_width=4)) == ("resnet18", 4)
    assert arch_of(build_backbone("resnet50", base_width=16)) == ("resnet50", 16)
    assert arch_of(torch.nn.Linear(2, 2)) is None
    choice = mf.choose_for(torch.nn.Linear(2, 2), torch.device("cpu"))
    assert not choice.channels_last and "not a core.backbones ResNet" in choice.reason


def test_probe_on_this_cpu_is_cached(probe_cache):
    first = mf.probe("resnet18", 4, 1)
    assert first["isa"] != "unknown"  # oneDNN's own line was read
    files = list(probe_cache.glob("memory_format-*.json"))
    assert len(files) == 1
    assert mf.probe("resnet18", 4, 1) == first
    if mf.fast_isa(first["isa"]) and not first.get("crashed"):
        assert first["max_rel_diff"] < mf.TOLERANCE
    if not mf.fast_isa(first["isa"]):
        assert "skipped" in first and "max_rel_diff" not in first


@pytest.mark.parametrize("threads", [1, 2])
def test_avx2_kernels_are_never_trained_channels_last_even_in_the_probe(probe_cache, threads):
    # The probe child itself ran the defect on AVX2 kernels before: a corrupted heap that hung it
    # for 300 s on one CI machine. It now reads the ISA off a contiguous forward pass and stops.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "profile_create"}
    child = subprocess.run(
        [sys.executable, "-m", "core.memory_format", "--child", "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "isa:Intel AVX2" in child.stdout and '"skipped"' in child.stdout
    # no primitive on channels_last tensors (oneDNN's "acdb" layout) was created
    assert "acdb" not in child.stdout and "max_rel_diff" not in child.stdout


def test_a_child_that_prints_garbage_and_dies_is_recorded_as_crashed(
    probe_cache, monkeypatch, tmp_path
):
    # What a child with a corrupted heap can do: bytes that are not UTF-8, then a non-zero exit.
    child = tmp_path / "child.sh"
    child.write_text("#!/bin/sh\nprintf 'onednn_verbose,isa:\\377\\376\\n'\nexit 3\n")
    child.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(child))
    result = mf.probe("resnet18", 4, 1, use_cache=False)
    assert result["crashed"] == "exit status 3" and "max_rel_diff" not in result


def test_avx2_kernels_are_never_channels_last(probe_cache, monkeypatch):
    # oneDNN capped at AVX2 uses the kernels of AVX2-only CPUs (AMD Zen 1-3, older Intel) on any x86
    # CPU.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    choice = mf.choose(torch.device("cpu"), "resnet18", 16)
    assert not choice.channels_last and "AVX2" in choice.reason


# The defect itself, with nothing of the suite: a 1x1 stride-2 convolution of 4 input channels
# (ResNet-18 at base width 4: layer2's downsample), trained in channels_last on oneDNN's AVX2
# kernels.
RAW = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[1]))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False)
    ref = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False).double()
    ref.load_state_dict(conv.state_dict())
    conv = conv.to(memory_format=torch.channels_last)
    worst = 0.0
    for _ in range(20):
        x = torch.randn(16, 4, 8, 8)
        conv.weight.grad = ref.weight.grad = None
        conv(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
        ref(x.double()).square().sum().backward()
        diff = (conv.weight.grad - ref.weight.grad).abs().max() / ref.weight.grad.abs().max()
        worst = max(worst, diff.item())
    print(worst)
""")


@pytest.mark.parametrize("threads", [1, 2])
def test_probe_catches_what_the_raw_defect_does(probe_cache, monkeypatch, threads):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # restored after the test, whatever it was
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        raw = subprocess.run(
            [sys.executable, "-c", RAW, str(threads)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        broken = raw.returncode != 0 or float(raw.stdout.split()[-1]) > mf.TOLERANCE
    except subprocess.TimeoutExpired:  # a corrupted heap can hang instead of crashing
        broken = True
    result = mf.probe("resnet18", 4, threads, use_cache=False, timeout=60, compare=True)
    found = bool(result.get("crashed")) or result.get("max_rel_diff", 0.0) > mf.TOLERANCE
    assert "AVX2" in result["isa"]
    assert found == broken, result
