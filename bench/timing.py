"""What every benchmark section shares: options, interleaved timing with warm-up, medians, memory
probes."""

from __future__ import annotations

import dataclasses
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the repository: configs are read relative to it


@dataclasses.dataclass
class Options:
    """Command-line choices every section reads."""

    #: Tiny sizes and two repeats: checks that a section runs and writes its file, not a
    #: measurement.
    quick: bool = False
    #: Repeats of every timed figure (None: each section's own default).
    repeats: int | None = None
    #: ``key=value`` config overrides for every pretraining config the sections build.
    overrides: list[str] = dataclasses.field(default_factory=list)
    #: FactorShapes cache folder (None: the data cache every stage uses).
    data_root: str | None = None
    #: ``make all``'s stage log.
    make_log: Path = Path("results/runs/make_all.jsonl")
    #: Called by a long section with what it has measured so far, so that a run cut off (a
    #: device call's time limit) keeps those figures; ``python -m bench`` writes them to
    #: ``<section>.json.partial``.
    checkpoint: Callable[[dict[str, object]], None] | None = None

    def reps(self, default: int) -> int:
        return self.repeats or (2 if self.quick else default)

    def save(self, partial: dict[str, object]) -> None:
        """Hand ``partial`` (the section's result so far) to ``checkpoint``, if there is one."""
        if self.checkpoint is not None:
            self.checkpoint(partial)


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work, so that a wall-clock time covers it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, list[float]]:
    """Seconds of each call of ``fns[name]``, ``repeats`` samples each after ``warmup`` untimed
    calls.

    Within a repeat every function runs once in turn, so a change of load on a shared machine hits
    all of them alike and their ratios stay comparable; the turn order rotates from repeat to
    repeat, so that no function always runs right after the same other one (caches and the allocator
    favour some orders)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return samples


def paired_ratio(samples: list[float], baseline: list[float]) -> float:
    """Median over repeats of ``samples[r] / baseline[r]``: both timed within the same repeat, so a
    load change between repeats cancels out (steadier than a ratio of two medians)."""
    return statistics.median(a / b for a, b in zip(samples, baseline, strict=True))


def summary(samples: list[float], per: float = 1.0) -> dict[str, object]:
    """Median (the figure), spread and raw samples of seconds per call, divided by ``per`` units."""
    values = [s / per for s in samples]
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "samples_s": values,
    }


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def rss_mb() -> float | None:
    """Resident memory of this process now (Linux), MiB."""
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def reset_peak_rss() -> bool:
    """Restart the kernel's resident high-water mark (Linux >= 4.0), so a peak covers what follows
    only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Resident high-water mark of this process (since start or the last ``reset_peak_rss``),
    MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return kib / 1024


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
