"""Seeds and random-number-generator state.

Every run takes one seed and records it. ``seed_everything`` seeds Python, NumPy and torch; data
loader workers get seeds derived from it (``worker_init_fn``); ``rng_state``/``set_rng_state``
capture and restore all generators in a form that ``torch.load(weights_only=True)`` accepts
(tensors, ints, lists, dicts), so a resumed run continues the same random stream.
"""

from __future__ import annotations

import os
import random
from typing import Any, cast

import numpy as np
import torch

from core.io import plain


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for
    deterministic kernels (slower on GPU; CPU runs are deterministic for a fixed seed and thread
    count anyway)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # A fixed thread count for the run: torch.set_num_threads also turns MKL's dynamic threading
    # off, which lets MKL change a call's threads, and with them its rounding, from run to run (the
    # tests set it too).
    torch.set_num_threads(torch.get_num_threads())
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def worker_init_fn(worker_id: int) -> None:
    """Seed Python and NumPy in a data loader worker from torch's per-worker seed (itself from the
    run seed)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed + worker_id)
    np.random.seed((seed + worker_id) % 2**32)


def make_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator for samplers and data loaders, so shuffling depends on the seed
    alone."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng_state() -> dict[str, Any]:
    """State of the Python, NumPy and torch generators, in weights_only-loadable types."""
    version, internal, gauss = random.getstate()
    # legacy (the default) on the global MT19937 generator: the (name, keys, pos, has_gauss,
    # gauss) tuple
    np_state = cast(tuple[Any, ...], np.random.get_state())
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(plain, np_state[2:]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator seeded from (seed, epoch, index) through numpy's SeedSequence mixing."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
