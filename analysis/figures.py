"""Shared plotting set-up: headless matplotlib (Agg), one style, atomic PNG writes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or clusters
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120


def new_figure(width: float = 6.4, height: float = 4.0):
    """A (figure, axes) pair in the suite's style."""
    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    return fig, ax


def _wrap_titles(fig, width_px_per_char: float = 9.0) -> None:
    """Wrap titles that would run past the figure's edge (long run labels) onto several lines."""
    width = max(20, int(fig.get_figwidth() * fig.dpi / width_px_per_char))
    for ax in fig.axes:
        title = ax.get_title()
        if len(title) > width:
            ax.set_title(textwrap.fill(title, width))
    if fig._suptitle is not None and len(fig._suptitle.get_text()) > width:
        fig._suptitle.set_text(textwrap.fill(fig._suptitle.get_text(), width))


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (temp file + rename, so a crash never leaves half a PNG);
    close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _wrap_titles(fig)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
