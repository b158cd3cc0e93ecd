"""Run under `torchrun --nproc_per_node 2`: each process takes its half of a fixed batch of
embeddings, computes the VICReg and MAST losses with gathering, and saves its values and gradients
for the test."""

import sys

import torch

from core import distributed as dist
from pretrain.losses import MASTLoss, VICRegLoss


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
    vicreg, _ = VICRegLoss()(z_local[0], z_local[1])
    (g_vicreg,) = torch.autograd.grad(vicreg, z_local)
    mast, _ = MASTLoss()(
        z_local, torch.tensor([[0, 1]] * 3), gates[rows], torch.sigmoid(theta_local), lv_local
    )
    g_z, g_lv, g_theta = torch.autograd.grad(mast, (z_local, lv_local, theta_local))
    torch.save(
        {
            "vicreg": vicreg.detach(),
            "g_vicreg": g_vicreg,
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
