"""Shared plotting set-up: headless matplotlib (Agg), one style, atomic PNG writes."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or clusters
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120


def new_figure(width: float = 6.4, height: float = 4.0):
    """A (figure, axes) pair in the suite's style."""
    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    return fig, ax


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (temp file + rename, so a crash never leaves half a PNG); close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
