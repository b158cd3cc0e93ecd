"""Distributed helpers: process-group start-up from torchrun's environment and collectives.

Under ``torchrun --nproc_per_node N -m <stage> ...`` each process reads RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT from its environment; without them everything runs as one
process. The backend is NCCL when the processes use CUDA devices and gloo otherwise (CPU DDP works
for tests and small runs).
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """What torchrun's environment says about this process (a single process when it says
    nothing)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(use_cuda: bool | None = None, timeout_minutes: int = 30) -> DistInfo:
    """Join the process group torchrun describes (if any) and return this process's place in it."""
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={info.world_size} but {name} is not set: start the run with torchrun"
            )
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        "nccl" if use_cuda else "gloo",
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over processes (a copy; the input is left alone)."""
    if not is_initialized():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward routes each process's share of the gradient back to it.

    Every process computes the same loss on the gathered batch, so the gradient of the sum of those
    losses with respect to this process's rows is the sum over processes of their gradient slices:
    all-reduce (sum) the incoming gradient and keep our rows. DDP's gradient averaging then yields
    the gradient of one loss.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every process) over processes, keeping gradients.

    Without a process group it returns ``tensor`` itself.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)
