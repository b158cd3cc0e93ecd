"""Optimisers and the learning-rate schedule of VICReg's official code.

LARS (momentum 0.9, eta 0.001) with weight decay and the trust ratio skipped for biases and norm
parameters (every 1-d tensor), as the official code excludes them. lr = base_lr x batch / 256;
linear warm-up, then cosine to 0.001 x lr. MAST's masks and uncertainty head form their own group,
without weight decay or LARS adaptation, at ``mask_lr`` (scaled by the same schedule). A module
that stacks independent weight matrices in one tensor (``stacked_weights``: the leading dimension
indexes them; ``stacked_biases``: biases kept in such tensors) is optimised as if they were apart:
LARS takes one trust ratio per matrix, and the biases go with the 1-d tensors. SGD and AdamW are
there for small CPU runs.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose update is scaled per tensor by eta * ||w|| / ||g + wd w|| (the trust
    ratio).

    Groups carry ``lars`` (apply the trust ratio), ``stacked`` (one ratio per slice of the leading
    dimension) and ``weight_decay``; plain flags, so the
    optimizer state saves and loads with ``weights_only=True``. ``foreach`` updates a group's
    tensors together (a few fused kernels instead of about a dozen per tensor); None: on
    accelerators only, so that CPU runs keep their numbers.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        lars: bool = True,
        foreach: bool | None = None,
    ):
        super().__init__(
            params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=lars)
        )
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            foreach = self.foreach
            if foreach is None:
                foreach = params[0].device.type != "cpu"
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(state["momentum_buffer"])
            # stacked tensors are few (grouped heads): their per-slice norms go one by one
            together = foreach and not group.get("stacked", False)
            (_update_together if together else _update_each)(group, params, buffers)
        return loss


def _trust_ratio(p_norm: torch.Tensor, u_norm: torch.Tensor, eta: float) -> torch.Tensor:
    """eta ||w|| / ||u||, or 1 where either norm is 0 (no sync: the test runs on the device)."""
    return torch.where((p_norm > 0) & (u_norm > 0), eta * p_norm / u_norm, torch.ones_like(p_norm))


def _update_each(
    group: dict[str, Any], params: list[torch.Tensor], buffers: list[torch.Tensor]
) -> None:
    wd = group["weight_decay"]
    for p, buf in zip(params, buffers):
        grad = cast(torch.Tensor, p.grad)
        update = grad.add(p, alpha=wd) if wd else grad.clone()
        if group["lars"]:
            # stacked: a norm per slice of the leading dimension; otherwise one for the tensor
            dims = tuple(range(1, p.ndim)) if group.get("stacked", False) else None
            keep = dims is not None
            p_norm = torch.linalg.vector_norm(p, dim=dims, keepdim=keep)
            u_norm = torch.linalg.vector_norm(update, dim=dims, keepdim=keep)
            update.mul_(_trust_ratio(p_norm, u_norm, group["eta"]))
        buf.mul_(group["momentum"]).add_(update)
        p.add_(buf, alpha=-group["lr"])


def _update_together(
    group: dict[str, Any], params: list[torch.Tensor], buffers: list[torch.Tensor]
) -> None:
    grads = [cast(torch.Tensor, p.grad) for p in params]
    wd = group["weight_decay"]
    updates = torch._foreach_add(grads, params, alpha=wd) if wd else torch._foreach_mul(grads, 1.0)
    if group["lars"]:
        p_norm = torch.stack(torch._foreach_norm(params))
        u_norm = torch.stack(torch._foreach_norm(updates))
        # per-tensor factors as 0-d device tensors, as torch's capturable Adam divides by its steps
        torch._foreach_mul_(updates, list(_trust_ratio(p_norm, u_norm, group["eta"]).unbind()))
    torch._foreach_mul_(buffers, group["momentum"])
    torch._foreach_add_(buffers, updates)
    torch._foreach_add_(params, buffers, alpha=-group["lr"])


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, mask_lr: float
) -> list[dict[str, Any]]:
    """Up to four groups: weights (decay + LARS), stacked weights (decay + LARS per matrix),
    biases and norms (neither), masks + uncertainty head (own lr); empty ones left out."""
    special = set()
    for name in ("masks", "uncertainty_head"):
        module = getattr(model, name, None)
        if module is not None:
            special |= {id(p) for p in module.parameters()}
    stacked, biases = set(), set()
    for module in model.modules():
        stacked |= {id(getattr(module, n)) for n in getattr(module, "stacked_weights", ())}
        biases |= {id(getattr(module, n)) for n in getattr(module, "stacked_biases", ())}
    weights: list[nn.Parameter] = []
    blocks: list[nn.Parameter] = []
    flat: list[nn.Parameter] = []
    extra: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in special:
            extra.append(p)
        elif id(p) in stacked:
            blocks.append(p)
        elif p.ndim == 1 or id(p) in biases:
            flat.append(p)
        else:
            weights.append(p)
    groups = [
        dict(params=weights, weight_decay=weight_decay, lars=True, lr=lr, base_lr=lr),
        dict(params=blocks, weight_decay=weight_decay, lars=True, stacked=True, lr=lr, base_lr=lr),
        dict(params=flat, weight_decay=0.0, lars=False, lr=lr, base_lr=lr),
        dict(params=extra, weight_decay=0.0, lars=False, lr=mask_lr, base_lr=mask_lr),
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    mask_lr: float,
    momentum: float = 0.9,
    eta: float = 0.001,
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, lr, mask_lr)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=eta)
    for group in groups:  # elementwise optimisers: a stacked tensor is its matrices already
        group.pop("lars")
        group.pop("stacked", None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer '{name}'; choose lars, sgd or adamw")


def lr_factor(step: int, total_steps: int, warmup_steps: int, end_factor: float = 0.001) -> float:
    """Multiplier of each group's base lr: linear warm-up from 0, then cosine down to
    ``end_factor``."""
    if step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    q = 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return q + end_factor * (1 - q)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
