"""The memory format convolutions train in: channels_last where it is known to be safe and faster.

On CUDA a requested channels_last is used as is. On CPU, oneDNN runs the convolutions with kernels
for the instruction set it finds, and channels_last is chosen only when a probe in a child process
finds oneDNN on AVX-512-class kernels and the model's channels_last gradients equal the contiguous
ones. On AVX2-class kernels it is never chosen, nor even tried: their 1x1 strided weight-gradient
kernel corrupts the heap (a crash, or a hang), or returns wrong gradients, for convolutions of fewer
than 8 input channels, and nothing vouches for the other shapes (docs/reliability.md: the defect,
and what contiguous tensors cost there). A child process keeps a crash out of the caller; its
verdict is cached on disk per CPU, torch version, kernel settings, architecture, width and threads.

  python -m core.memory_format [--arch resnet18] [--width 4] [--threads N] [--no-cache] [--compare]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import torch

from core.backbones import arch_of, build_backbone
from core.cpu import cpu_flags, cpu_model
from core.io import atomic_write_text, suite_cache

#: Environment variables that change which kernels oneDNN, MKL or ATen pick: part of the cache key.
KERNEL_ENV = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "ATEN_CPU_CAPABILITY",
    "OMP_NUM_THREADS",
)
#: oneDNN ISA names (its verbose "isa:" line) that mean AVX-512-class kernels.
FAST_ISA = ("AVX-512", "AVX512", "AVX10", "AMX")
#: Largest relative gradient difference between the two formats that counts as float rounding.
TOLERANCE = 1e-3
PROBE_VERSION = 2
#: Seconds a probe child may take (a corrupted heap can hang rather than crash).
PROBE_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Choice:
    """The memory format a run uses and why (recorded in run.json)."""

    channels_last: bool
    reason: str

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def name(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def as_dict(self) -> dict[str, str]:
        return {"memory_format": self.name, "reason": self.reason}


def probe_key(arch: str, width: int, threads: int) -> str:
    facts = [
        PROBE_VERSION,
        torch.__version__,
        cpu_model(),
        cpu_flags(),
        arch,
        width,
        threads,
        {name: os.environ.get(name) for name in KERNEL_ENV},
    ]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def probe(
    arch: str,
    width: int,
    threads: int,
    use_cache: bool = True,
    timeout: float = PROBE_TIMEOUT,
    compare: bool = False,
) -> dict[str, object]:
    """Run the probe child for ``arch`` at ``width`` with ``threads`` threads (cached on disk). The
    child reads oneDNN's ISA off a contiguous convolution; on AVX-512-class kernels (or with
    ``compare``, for the tests of the defect) it then compares channels_last forward + backward
    passes with contiguous ones. Returns ``isa``, then ``max_rel_diff``, or ``skipped`` (why no
    comparison ran), or ``crashed`` (the signal, exit status or timeout) when the child died."""
    name = probe_key(arch, width, threads) + ("-compare" if compare else "")
    path = suite_cache("probes", "MAST_PROBE_CACHE") / f"memory_format-{name}.json"
    if use_cache:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "ONEDNN_VERBOSE": "profile_create",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
    }
    command = [
        sys.executable,
        "-m",
        "core.memory_format",
        "--child",
        "--arch",
        arch,
        "--width",
        str(width),
        "--threads",
        str(threads),
        *(["--compare"] if compare else []),
    ]
    try:
        # A child that corrupts its heap can print bytes that are not text: decode them leniently
        # so the crash is recorded rather than raised here.
        done = subprocess.run(
            command,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            check=False,
            env=env,
            timeout=timeout,
        )
        stdout, returncode = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout, returncode = (exc.stdout or b"").decode(errors="replace"), None
    lines = stdout.splitlines()
    isa = isa_in(lines)
    result: dict[str, object] = {"isa": isa}
    answer = [line for line in lines if line.startswith("{")]
    if returncode is None:
        result["crashed"] = f"no answer within {timeout:.0f} s"
    elif returncode != 0 or not answer:
        result["crashed"] = (
            f"signal {signal.Signals(-returncode).name}"
            if returncode < 0
            else f"exit status {returncode}"
        )
    else:
        result.update(json.loads(answer[-1]))
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result) + "\n")
    return result


def isa_in(lines: list[str]) -> str:
    """The ISA named by oneDNN's verbose ``isa:`` line among ``lines`` ("unknown" without one)."""
    return next((line.split("isa:", 1)[1].strip() for line in lines if ",isa:" in line), "unknown")


def fast_isa(isa: str) -> bool:
    return any(name in isa for name in FAST_ISA)


def verdict(result: dict[str, Any]) -> Choice:
    """The choice a probe result supports, with its reason in one line."""
    isa = str(result["isa"])
    crashed, diff = result.get("crashed"), float(result.get("max_rel_diff", float("inf")))
    found = (
        f"the probe crashed ({crashed})"
        if crashed
        else "channels_last was not tried"
        if result.get("skipped")
        else f"gradients differ by {diff:.2g}"
        if diff > TOLERANCE
        else f"gradients match ({diff:.1e})"
    )
    if not fast_isa(isa):
        return Choice(
            False,
            f"oneDNN has AVX2-class kernels here ({isa}), whose channels_last 1x1 strided "
            f"kernels corrupt memory at narrow widths (docs/reliability.md); {found}",
        )
    if crashed or diff > TOLERANCE:
        return Choice(False, f"oneDNN on {isa}: channels_last {found}")
    return Choice(
        True, f"oneDNN on {isa}: channels_last is faster here and its {found} the contiguous ones"
    )


_CHOSEN: dict[tuple[str, int, int], Choice] = {}


def choose(device: torch.device, arch: str, width: int, requested: bool = True) -> Choice:
    """The memory format for training ``arch`` at ``width`` on ``device`` (channels_last only if
    requested)."""
    if not requested:
        return Choice(False, "train.channels_last is false")
    if device.type == "cuda":
        return Choice(True, "CUDA")
    if device.type != "cpu":
        return Choice(False, f"channels_last is used on CUDA and CPU only, not {device.type}")
    key = (arch, width, torch.get_num_threads())
    if key not in _CHOSEN:
        _CHOSEN[key] = verdict(probe(*key))
    return _CHOSEN[key]


def choose_for(model: torch.nn.Module, device: torch.device, requested: bool = True) -> Choice:
    """``choose`` for a backbone of ``core.backbones`` (its arch and width read off it); contiguous
    on CPU for any other network, which the probe does not know."""
    found = arch_of(model)
    if found is None and device.type == "cpu" and requested:
        return Choice(
            False, "not a core.backbones ResNet: the probe cannot vouch for channels_last"
        )
    return choose(device, *(found or ("", 0)), requested=requested)


# ---------------------------------------------------------------------------------------------
# child
def gradients(
    arch: str, width: int, memory_format: torch.memory_format, steps: int
) -> dict[str, torch.Tensor]:
    """Weight gradients of ``steps`` forward + backward passes (the same batch), summed."""
    torch.manual_seed(0)
    model = build_backbone(arch, base_width=width).to(memory_format=memory_format).train()
    for module in model.modules():  # zero-init residual BNs would hide the blocks' convolutions
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    images = images.contiguous(memory_format=memory_format)
    for _ in range(steps):
        out = model(images)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    # steps >= 1 and every parameter is in the forward: each has its gradient
    return {name: cast(torch.Tensor, p.grad) for name, p in model.named_parameters()}


def onednn_isa() -> str:
    """oneDNN's ISA, read off its verbose line for one forward convolution (ONEDNN_VERBOSE is set by
    the parent), with this process's C stdout sent to a file meanwhile. The batch is large enough
    for ATen to hand the convolution to oneDNN; a contiguous forward pass is outside the defect."""
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            torch.nn.Conv2d(8, 8, 3)(torch.zeros(16, 8, 8, 8))
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode(errors="replace").splitlines()
    return isa_in(lines)


def child(arch: str, width: int, threads: int, compare: bool) -> int:
    torch.set_num_threads(threads)
    isa = onednn_isa()
    # The ISA line first, flushed, so that the parent has it even if the check below crashes.
    print(f"onednn_verbose,info,cpu,isa:{isa}", flush=True)
    if not (compare or fast_isa(isa)):
        # Training channels_last on these kernels is what corrupts the heap: never run it here.
        print(json.dumps({"skipped": "AVX2-class kernels: channels_last is never used"}))
        return 0
    reference = gradients(arch, width, torch.contiguous_format, steps=1)
    tested = gradients(arch, width, torch.channels_last, steps=10)
    repeated = gradients(arch, width, torch.contiguous_format, steps=10)
    worst = 0.0
    # 10 passes of one batch: compare to 10 contiguous ones and to 10 x one
    for name, grad in tested.items():
        scale = float(repeated[name].abs().max()) + 1e-12
        worst = max(
            worst,
            float((grad - repeated[name]).abs().max()) / scale,
            float((grad - 10 * reference[name]).abs().max()) / scale,
        )
    print(json.dumps({"max_rel_diff": worst}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.memory_format",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument(
        "--width", type=int, default=4, help="base width (default 4: the tests' narrowest)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="probe again instead of reading the cache"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="compare the two formats even on AVX2-class kernels (may crash or hang the child)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    if args.child:
        return child(args.arch, args.width, threads, args.compare)
    result = probe(
        args.arch, args.width, threads, use_cache=not args.no_cache, compare=args.compare
    )
    choice = verdict(result)
    print(
        json.dumps(
            {
                "arch": args.arch,
                "width": args.width,
                "threads": threads,
                **result,
                **choice.as_dict(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
