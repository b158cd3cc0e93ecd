"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi, Hinton, ICML 2020).

Each of the 2N embeddings of a batch of N pairs is a query; its positive is the other view of its
image, its negatives the 2N - 2 other embeddings:
l_i = -log exp(sim(z_i, z_pos(i)) / temperature) / sum_{j != i} exp(sim(z_i, z_j) / temperature),
with sim the cosine similarity and the loss the mean over the 2N queries. Queries are this process's
embeddings and candidates those of the batch gathered across processes (gradients kept), so the
loss is the same at any number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import gather_with_grad, rank

#: Defaults of ``loss.options``: 0.1 at ImageNet scale, 0.2 at CIFAR / STL-10 scale (SimCLR, B.9).
OPTIONS = {"temperature": 0.1}


class NTXentLoss(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SimCLR's temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = z_a.shape[0]
        local = F.normalize(torch.cat([z_a, z_b]), dim=1)  # [2n, d]: views a then b
        every_a = F.normalize(gather_with_grad(z_a), dim=1)
        every_b = F.normalize(gather_with_grad(z_b), dim=1)
        candidates = torch.cat([every_a, every_b])  # [2N, d]: every process's a, then its b
        logits = local @ candidates.T / self.temperature
        total = every_a.shape[0]
        own = rank() * n + torch.arange(n, device=z_a.device)
        selves = torch.cat([own, own + total])  # each query's own column
        positives = torch.cat([own + total, own])  # the other view of the same image
        logits = logits.masked_fill(
            F.one_hot(selves, 2 * total).bool(), torch.finfo(logits.dtype).min
        )
        loss = F.cross_entropy(logits, positives)
        with torch.no_grad():  # how often the positive is the nearest candidate
            accuracy = (logits.argmax(dim=1) == positives).float().mean()
        return loss, {"nt_xent": loss.detach(), "pos_top1": accuracy}


def build(cfg, ops: list[str] | None = None) -> NTXentLoss:
    """The method table's constructor (``core/methods.py``): NT-Xent with ``loss.options``."""
    return NTXentLoss(**cfg.loss.options)
