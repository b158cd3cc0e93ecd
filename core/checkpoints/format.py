"""The suite's checkpoint format: save (atomic), load (``weights_only=True`` always), validate,
export.

A checkpoint is a dict with ``"format": "mast-suite/1"`` and at least ``backbone`` (a torchvision
ResNet state_dict without ``fc``), ``arch``, ``method`` and ``config``; pretraining adds expander,
masks, uncertainty head, optimizer, scaler, rng, epoch and step (``docs/design.md``).
``export_backbone`` writes the bare state_dict that ``torchvision.models.<arch>()`` loads with
``strict=False`` (only ``fc`` missing).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from core import faults
from core.io import TMP_PREFIX, atomic_torch_save, atomic_write

FORMAT = "mast-suite/1"
REQUIRED_KEYS = ("format", "backbone", "arch", "method", "config")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file, the problem and the fix."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename): an interrupted save leaves
    the previous checkpoint intact. Leftover temp files of an earlier interrupted save are removed
    first."""
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"refusing to save a checkpoint without {missing} (required: {list(REQUIRED_KEYS)})"
        )
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint format must be {FORMAT!r}, got {state['format']!r}")
    path = Path(path)
    for stale in path.parent.glob(f"{TMP_PREFIX}{path.name}.*"):
        stale.unlink(missing_ok=True)
    atomic_write(path, lambda handle: torch.save(state, faults.writer(handle, "checkpoint_write")))
    faults.point("checkpoint_saved")
    return path


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors for missing, truncated and
    pickled files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # garbage or a truncated archive, not a refused object
            raise CheckpointError(
                f"{path} is not a readable torch checkpoint (truncated or corrupt?)"
            ) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"Python objects ({found.group(1)})" if found else "Python objects"
        raise CheckpointError(
            f"{path} holds {what} that only a full unpickle can load; it is refused because "
            "unpickling an untrusted file can run arbitrary code. Re-save its weights as a plain "
            "state_dict (torch.save(model.state_dict(), ...)) where it was made."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt?): {exc}"
        ) from None
    # e.g. a plain pickle: torch's restricted unpickler fails in its own ways
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (a plain pickle, truncated or corrupt?): "
            f"{type(exc).__name__}"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a suite checkpoint and check its format and required keys."""
    return check_suite_state(load_file(path, map_location), path)


def check_suite_state(state: Any, path: str | Path) -> dict[str, Any]:
    """``state`` if it is a suite checkpoint with the required keys, a CheckpointError naming
    ``path`` if not."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a {FORMAT} checkpoint (format: {found!r}); import external checkpoints "
            "with `python -m core.checkpoints convert`"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks the checkpoint keys {missing}")
    return state


def export_backbone(path: str | Path, out: str | Path) -> Path:
    """Write the bare backbone state_dict of suite checkpoint ``path`` to ``out`` (atomically)."""
    backbone = load_checkpoint(path)["backbone"]
    return atomic_torch_save(dict(backbone), out)


def describe(state: dict[str, Any]) -> dict[str, Any]:
    """A short, JSON-ready summary of a suite checkpoint."""
    backbone = state["backbone"]
    return {
        "format": state["format"],
        "arch": state["arch"],
        "method": state["method"],
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "aug_names": state.get("aug_names"),
        "backbone_tensors": len(backbone),
        "backbone_parameters": int(
            sum(t.numel() for t in backbone.values() if t.is_floating_point())
        ),
        "keys": sorted(state),
    }
