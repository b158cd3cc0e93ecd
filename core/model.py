"""The network pretraining optimises: backbone, VICReg expander, MAST masks and uncertainty head,
and a method's own prediction heads.

``PretrainModel.forward(views)`` takes the V views of a batch and returns the embeddings of every
view and, when the method has them, the masks, the uncertainty head's log-variances and the heads'
predictions. Masks and heads are part of the model (not the loss) so that DDP averages their
gradients with the rest.
"""

from __future__ import annotations

import copy
from typing import Literal, cast

import torch
from torch import nn

from core.backbones import build_backbone


def random_partition(
    num_ops: int, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A [K, d] 0/1 matrix assigning every dimension to exactly one op, in near-equal shares."""
    owner = torch.arange(dim) % num_ops
    owner = owner[torch.randperm(dim, generator=generator)]
    return torch.nn.functional.one_hot(owner, num_ops).T.float()


def random_assignment(
    num_owned: int, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A [K' + 1, d] one-hot assignment (row 0: shared) in near-equal shares over the K' + 1
    classes."""
    owner = torch.arange(dim) % (num_owned + 1)
    owner = owner[torch.randperm(dim, generator=generator)]
    return torch.nn.functional.one_hot(owner, num_owned + 1).T.float()


def parse_spec(spec: str) -> list[int]:
    """``"8192-8192-8192"`` -> [8192, 8192, 8192]; a malformed spec is a ValueError naming it."""
    try:
        sizes = [int(part) for part in spec.split("-")]
    except ValueError:
        raise ValueError(
            f"expander spec '{spec}' must be layer sizes joined by '-', e.g. 8192-8192-8192"
        ) from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"expander spec '{spec}' must list positive layer sizes")
    return sizes


def build_expander(in_dim: int, spec: str) -> nn.Sequential:
    """VICReg's expander: (Linear, BatchNorm1d, ReLU) for every hidden size, then a Linear without
    bias."""
    sizes = [in_dim, *parse_spec(spec)]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


class UncertaintyHead(nn.Module):
    """u: y -> hidden -> K (Linear, BN, ReLU, Linear): log sigma^2 of each op's subspace for one
    view."""

    def __init__(self, in_dim: int, num_ops: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_ops),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


MaskKind = Literal["learned", "fixed", "assign", "assign_fixed"]


class MaskBank(nn.Module):
    """K masks over the d embedding dimensions: learned (sigmoid of logits) or a fixed random
    partition (OR); or, for AND (``assign``, ``assign_fixed``), a [K + 1, d] assignment of each
    dimension to {shared, op_1..op_K} (softmax of logits over the K + 1 classes, or a fixed random
    one-hot), where K counts the owning ops."""

    fixed: torch.Tensor  # buffer of the fixed kinds

    def __init__(
        self,
        num_ops: int,
        dim: int,
        kind: MaskKind = "learned",
        init_std: float = 0.01,
        seed: int = 0,
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.kind = kind
        rows = num_ops + 1 if kind.startswith("assign") else num_ops
        if kind in ("learned", "assign"):
            # method.md: logits start at 0 plus N(0, 0.01) noise (masks at about 0.5; assignments
            # uniform).
            self.logits = nn.Parameter(torch.randn(rows, dim, generator=generator) * init_std)
        elif kind == "fixed":
            self.register_buffer("fixed", random_partition(num_ops, dim, generator))
        else:
            self.register_buffer("fixed", random_assignment(num_ops, dim, generator))

    @property
    def learned(self) -> bool:
        return self.kind in ("learned", "assign")

    def forward(self) -> torch.Tensor:
        if self.kind == "learned":
            return torch.sigmoid(self.logits)
        return torch.softmax(self.logits, dim=0) if self.kind == "assign" else self.fixed


class PretrainModel(nn.Module):
    def __init__(
        self,
        arch: str = "resnet18",
        base_width: int = 64,
        expander: str = "8192-8192-8192",
        num_ops: int = 0,
        masks: Literal["none", "learned", "fixed", "assign", "assign_fixed"] = "none",
        uncertainty: bool = False,
        uncertainty_hidden: int = 512,
        mask_init_std: float = 0.01,
        seed: int = 0,
        num_owned: int | None = None,
        heads: nn.Module | None = None,
        ema_target: bool = False,
    ):
        """``num_owned``: ops that can own dimensions under an AND assignment (default: all
        ``num_ops``); ``heads``: a method's prediction heads (its loss module builds them), called
        as ``heads(features, z, masks, params)`` with every view's backbone features [V, B, F], the
        embeddings [V, B, d], the masks (or None) and the views' recorded parameters [B, V, P] (or
        None); ``ema_target``: keep a target network, a moving average of the backbone and
        expander (``update_target``) that the optimiser never sees."""
        super().__init__()
        self.backbone = build_backbone(arch, base_width)
        feature_dim = cast(int, self.backbone.feature_dim)  # set by build_backbone
        self.expander = build_expander(feature_dim, expander)
        self.embed_dim = parse_spec(expander)[-1]
        rows = num_owned if masks.startswith("assign") and num_owned is not None else num_ops
        self.masks = (
            MaskBank(rows, self.embed_dim, masks, mask_init_std, seed) if masks != "none" else None
        )
        self.uncertainty_head = (
            UncertaintyHead(feature_dim, num_ops, uncertainty_hidden) if uncertainty else None
        )
        self.heads = heads
        self.target: nn.ModuleDict | None = None
        if ema_target:
            self.target = nn.ModuleDict(
                {"backbone": copy.deepcopy(self.backbone), "expander": copy.deepcopy(self.expander)}
            )
            self.target.requires_grad_(False)

    def forward(
        self, views: torch.Tensor, params: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``views`` [V, B, 3, H, W] float (or a list of V [B, 3, H, W]) -> ``z`` [V, B, d],
        optional ``masks`` [K, d], ``log_var`` [V, B, K] and ``heads`` (what the heads return;
        ``params`` [B, V, P], the views' recorded parameters, are passed on to them).

        Each view goes through the network on its own, as in the official VICReg code, so BatchNorm
        statistics are per view."""
        ys = [self.backbone(view) for view in views]
        out = {"z": torch.stack([self.expander(y) for y in ys])}
        if self.masks is not None:
            out["masks"] = self.masks()
        if self.uncertainty_head is not None:
            # Detached: the head reads the features, it never trains the backbone to feed it (a
            # backbone that encodes each view's augmentation state to predict the pair error loses
            # what the ops change).
            out["log_var"] = torch.stack([self.uncertainty_head(y.detach()) for y in ys])
        if self.heads is not None:
            out["heads"] = self.heads(torch.stack(ys), out["z"], out.get("masks"), params)
        if self.target is not None:
            with torch.no_grad():
                target = self.target
                out["z_target"] = torch.stack(
                    [target["expander"](target["backbone"](view)) for view in views]
                )
        return out

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, parameter by parameter (the
        target's batch-norm statistics are its own, from its forward passes)."""
        if self.target is None:
            return
        for name in ("backbone", "expander"):
            online = getattr(self, name).parameters()
            for t, o in zip(self.target[name].parameters(), online, strict=True):
                t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def model_from_checkpoint(state: dict) -> PretrainModel:
    """The network of a suite pretraining checkpoint, in eval mode: its backbone, and its expander
    and uncertainty head where it has them. The masks stay in ``state["masks"]``, where the analyses
    read them."""
    spec = state["config"]["model"]
    head = state.get("uncertainty_head")
    model = PretrainModel(
        spec["arch"],
        spec["base_width"],
        spec["expander"],
        num_ops=len(state.get("aug_names") or []),
        uncertainty=bool(head),
        uncertainty_hidden=spec["uncertainty_hidden"],
    )
    model.backbone.load_state_dict(state["backbone"])
    if state.get("expander"):
        model.expander.load_state_dict(state["expander"])
    if head:
        assert model.uncertainty_head is not None  # built with uncertainty=bool(head)
        model.uncertainty_head.load_state_dict(head)
    return model.eval()
