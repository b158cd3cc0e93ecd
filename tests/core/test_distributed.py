import os
import socket

import pytest
import torch
import torch.multiprocessing as tmp

from core import distributed as dist_utils


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loss(z: torch.Tensor) -> torch.Tensor:
    # A batch statistic (like VICReg's variance/covariance terms): it couples the rows of every
    # process.
    centred = z - z.mean(0)
    return (centred.T @ centred).pow(2).sum() / z.shape[0] + z.std(0).sum()


def _worker(rank: int, world: int, port: int, full: torch.Tensor, queue) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    info = dist_utils.init_distributed(use_cuda=False)
    rows = full.shape[0] // world
    local = full[rank * rows : (rank + 1) * rows].clone().requires_grad_(True)
    gathered = dist_utils.gather_with_grad(local)
    loss = _loss(gathered)
    loss.backward()
    mean = dist_utils.all_reduce_mean(torch.tensor([float(rank)]))
    # numpy copies: torch tensors would travel as shared file descriptors that die with this
    # process.
    queue.put(
        (
            info.rank,
            info.world_size,
            info.is_main,
            gathered.detach().numpy().copy(),
            local.grad.numpy().copy(),
            loss.item(),
            mean.item(),
        )
    )
    dist_utils.barrier()
    dist_utils.destroy()


def test_gather_with_grad_matches_single_process():
    torch.manual_seed(0)
    full = torch.randn(8, 5)
    reference = full.clone().requires_grad_(True)
    ref_loss = _loss(reference)
    ref_loss.backward()

    ctx = tmp.get_context("spawn")
    queue = ctx.SimpleQueue()
    tmp.start_processes(
        _worker, args=(2, _free_port(), full, queue), nprocs=2, join=True, start_method="spawn"
    )
    results = sorted(queue.get() for _ in range(2))
    for rank, world, is_main, gathered, grad, loss, mean in results:
        assert world == 2 and is_main == (rank == 0) and mean == pytest.approx(0.5)
        gathered, grad = torch.from_numpy(gathered), torch.from_numpy(grad)
        assert torch.allclose(gathered, full)
        assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
        # Each process holds the gradient of the sum of both processes' (identical) losses for its
        # rows; DDP's averaging over 2 processes turns that into the single-process gradient.
        assert torch.allclose(grad / 2, reference.grad[rank * 4 : (rank + 1) * 4], atol=1e-5)


def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = dist_utils.init_distributed()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)
    x = torch.randn(3, requires_grad=True)
    assert (
        dist_utils.gather_with_grad(x) is x
        and dist_utils.world_size() == 1
        and dist_utils.rank() == 0
    )


def test_missing_master_address_is_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set: start the run with torchrun"):
        dist_utils.init_distributed(use_cuda=False)
