"""What the CPU is: its model name and instruction-set flags (``/proc/cpuinfo``)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` knows). Float results on CPU
    depend on it: the same seed gives the same bits on one CPU model, not across models (other
    oneDNN kernels)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's instruction-set flags (``/proc/cpuinfo``), or "" where that is not readable."""
    return _cpuinfo("flags")


def _cpuinfo(field: str) -> str:
    """The first ``field`` line's value in ``/proc/cpuinfo``, or "" (no such file or field)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith(field)), ""
            )
    except OSError:
        return ""
