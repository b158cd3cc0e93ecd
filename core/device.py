"""Device selection with a clear error when the requested accelerator is not there."""

from __future__ import annotations

import torch


def select_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` -> the process's CUDA device (by ``local_rank`` under torchrun) if CUDA works, else
    CPU.

    ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are taken as asked; asking for a device that is not
    available raises a one-line error that says what is available.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device '{spec}' was requested but CUDA is not available here: use --set "
                "device=cpu"
            )
        index = device.index if device.index is not None else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) "
                "visible"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(
            "device 'mps' was requested but MPS is not available here: use --set device=cpu"
        )
    return device
