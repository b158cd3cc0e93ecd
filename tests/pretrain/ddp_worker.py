"""Run under `torchrun --nproc_per_node 2`: each process takes its half of a fixed batch of
embeddings, computes the MAST loss, every two-view loss of the method table (VICReg, the
baselines) and LooC's (keys gathered across processes), and saves its values and gradients for the
test."""

import importlib
import sys

import torch

from core import distributed as dist
from core.config import load_config
from core.methods import METHODS
from pretrain.config import PretrainConfig
from pretrain.losses import MASTLoss
from pretrain.losses.looc import LooCLoss
from pretrain.train import build_loss


def pair_losses() -> dict[str, torch.nn.Module]:
    """The loss of every method without subspaces or prediction heads (whose losses also read the
    heads' outputs), at its default config: (z_a, z_b) losses."""
    return {
        name: build_loss(load_config(PretrainConfig, None, [f"method={name}"]))
        for name, entry in METHODS.items()
        if entry.masks == "none"
        and not hasattr(importlib.import_module(f"pretrain.losses.{entry.loss}"), "heads")
    }


def main(out_prefix: str) -> None:
    torch.set_num_threads(1)
    info = dist.init_distributed(use_cuda=False)
    torch.manual_seed(0)
    z = torch.randn(2, 16, 12, dtype=torch.float64)  # the whole batch, identical on every process
    log_var = torch.randn(2, 16, 3, dtype=torch.float64)
    gates = (torch.rand(16, 3) > 0.3).double()
    theta = torch.randn(3, 12, dtype=torch.float64)
    rows = slice(info.rank * 8, (info.rank + 1) * 8)
    z_local = z[:, rows].clone().requires_grad_(True)
    lv_local = log_var[:, rows].clone().requires_grad_(True)
    theta_local = theta.clone().requires_grad_(True)
    pairs = {}
    for name, loss in pair_losses().items():
        value, _ = loss(z_local[0], z_local[1])
        (grad,) = torch.autograd.grad(value, z_local)
        pairs[name] = (value.detach(), grad)
    mast, _ = MASTLoss()(
        z_local, torch.tensor([[0, 1]] * 3), gates[rows], torch.sigmoid(theta_local), lv_local
    )
    g_z, g_lv, g_theta = torch.autograd.grad(mast, (z_local, lv_local, theta_local))
    spaces = torch.randn(3, 4, 16, 12, dtype=torch.float64)  # LooC: 3 spaces, a query and 3 keys
    spaces_local = spaces[:, :, rows].clone().requires_grad_(True)
    looc, _ = LooCLoss(0.2)(spaces_local[0, 0], spaces_local[0, 1], {"spaces": spaces_local})
    (g_spaces,) = torch.autograd.grad(looc, spaces_local)
    torch.save(
        {
            "looc": looc.detach(),
            "g_spaces": g_spaces,
            "pairs": pairs,
            "mast": mast.detach(),
            "g_z": g_z,
            "g_lv": g_lv,
            "g_theta": g_theta,
            "world": info.world_size,
        },
        f"{out_prefix}{info.rank}.pt",
    )
    dist.destroy()


if __name__ == "__main__":
    main(sys.argv[1])
