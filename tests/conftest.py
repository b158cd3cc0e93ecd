"""Shared test set-up: one torch thread per process (tests run beside other work on 2 cores), no
bars."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MAST_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
