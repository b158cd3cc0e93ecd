"""AugSelf (Lee, Lee, Shin, Lee, Shin, NeurIPS 2021) on VICReg.

Besides the SSL loss, heads read the two views' concatenated backbone features and predict the
difference of their augmentation parameters, in both view orders:

  L = L_VICReg + sum_w lambda_w L_w,   L_w = mean over (a, b) in {(1, 2), (2, 1)} of
      MSE(tanh(h_w([y_a, y_b])), omega_w(a) - omega_w(b))    (crop, color, blur, sol)
      BCE(h_w([y_a, y_b]), 1[flip_a = flip_b])               (flip)

with h_w a 3-layer MLP (Linear without bias, BN, ReLU twice, then a Linear with bias; hidden 512)
and omega_w the parameters of the official code: crop the box centre (x mirrored, for both views,
where view a is flipped) and size; color the four jitter factors as (factor - 1) / range (hue:
shift / range), 0 when the jitter is not applied. Two differ from the official code: blur is sigma
over the largest sigma (0 when not applied; the official raw sigma difference can exceed tanh's
range), and ``sol`` the difference of the applied flags (the official code regresses solarize
thresholds; the suite's solarize has one threshold). The paper's recipes weight crop and color by
1.0 (STL-10) or 0.5 (ImageNet-100) and leave the rest off (weight 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.augment import PARAM_SLICES, AugmentConfig
from pretrain.losses.vicreg import VICRegLoss

#: Defaults of ``loss.options``: each objective's weight lambda_w (0: no head), and the heads'
#: hidden width. ``gray`` (grayscale applied or not) is not an AugSelf objective; it is there so
#: that AugSelf can predict exactly what the MAST subspace targets predict (their control).
OPTIONS = {
    "crop": 1.0,
    "color": 1.0,
    "flip": 0.0,
    "blur": 0.0,
    "sol": 0.0,
    "gray": 0.0,
    "hidden": 512,
}

#: Each objective: (the op whose parameters it reads, output size, loss).
OBJECTIVES: dict[str, tuple[str, int, str]] = {
    "crop": ("crop", 4, "regression"),
    "color": ("color_jitter", 4, "regression"),
    "flip": ("flip", 1, "binary"),
    "blur": ("blur", 1, "regression"),
    "sol": ("solarize", 1, "regression"),
    # not an AugSelf objective: the suite's MAST target uses it (pretrain/losses/mast_and.py)
    "gray": ("grayscale", 1, "regression"),
}


def parameter_target(
    a: torch.Tensor, b: torch.Tensor, name: str, augment: AugmentConfig
) -> torch.Tensor:
    """What objective ``name`` predicts for parameter rows ``a``, ``b`` [B, P]: [B, n]."""
    op = OBJECTIVES[name][0]
    pa, pb = a[:, PARAM_SLICES[op]], b[:, PARAM_SLICES[op]]
    if name == "crop":
        flipped = a[:, PARAM_SLICES["flip"]][:, 0] > 0.5

        def centre(box: torch.Tensor) -> torch.Tensor:
            c = box[:, :2] + box[:, 2:] / 2  # (y, x)
            return torch.stack([c[:, 0], torch.where(flipped, 1 - c[:, 1], c[:, 1])], 1)

        return torch.cat([centre(pa) - centre(pb), pa[:, 2:] - pb[:, 2:]], 1)
    if name == "color":
        widths = torch.tensor(
            [2 * augment.brightness, 2 * augment.contrast, 2 * augment.saturation, 2 * augment.hue],
            dtype=a.dtype,
            device=a.device,
        )
        neutral = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=a.dtype, device=a.device)

        def omega(p: torch.Tensor) -> torch.Tensor:
            # a jitter that is not applied records neutral factors, which give 0 here
            return torch.where(widths > 0, (p[:, 1:5] - neutral) / widths.clamp_min(1e-12), 0.0)

        return omega(pa) - omega(pb)
    if name == "flip":
        return (pa[:, :1] == pb[:, :1]).to(a.dtype)
    if name == "blur":  # sigma is recorded as 0 when the blur is not applied
        return (pa[:, 1:2] - pb[:, 1:2]) / max(augment.blur_sigma)
    return pa[:, :1] - pb[:, :1]  # sol, gray: the applied flags


def objective_loss(prediction: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """The objective's loss, in float32 at least (heads may run under autocast)."""
    prediction = prediction.to(torch.promote_types(prediction.dtype, torch.float32))
    target = target.to(prediction.dtype)
    if OBJECTIVES[name][2] == "binary":
        return F.binary_cross_entropy_with_logits(prediction, target)
    return F.mse_loss(torch.tanh(prediction), target)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """AugSelf's head: (Linear without bias, BatchNorm1d, ReLU) twice, then a Linear with bias."""
    return nn.Sequential(
        nn.Linear(n_in, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, n_out),
    )


class AugSelfHeads(nn.Module):
    """One head per objective of nonzero weight, on [y_a, y_b] for both view orders."""

    def __init__(self, feature_dim: int, names: list[str], hidden: int = 512):
        super().__init__()
        self.heads = nn.ModuleDict(
            {name: mlp(2 * feature_dim, hidden, OBJECTIVES[name][1]) for name in names}
        )

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``features`` [2, B, F] -> {name: [2B, n]}: rows of order (1, 2), then (2, 1)."""
        y_a, y_b = features[0], features[1]
        both = torch.cat([torch.cat([y_a, y_b], 1), torch.cat([y_b, y_a], 1)])
        return {name: head(both) for name, head in self.heads.items()}


def both_orders(params: torch.Tensor, name: str, augment: AugmentConfig) -> torch.Tensor:
    """Targets of views 1 and 2 (``params`` [B, 2, P]) in the heads' row order: [2B, n]."""
    a, b = params[:, 0], params[:, 1]
    return torch.cat([parameter_target(a, b, name, augment), parameter_target(b, a, name, augment)])


class AugSelfLoss(nn.Module):
    def __init__(
        self,
        augment: AugmentConfig,
        weights: dict[str, float],
        lam: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
    ):
        """``weights``: lambda_w of each objective (AugSelf's ``--ss-<name>``; <= 0: off);
        ``lam, mu, nu``: VICReg's."""
        super().__init__()
        unknown = sorted(set(weights) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown AugSelf objectives {unknown}; valid: {list(OBJECTIVES)}")
        self.augment = augment
        self.weights = {name: w for name, w in weights.items() if w > 0}
        self.base = VICRegLoss(lam, mu, nu)

    def forward(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        predictions: dict[str, torch.Tensor],
        params: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``predictions``: what ``AugSelfHeads`` returned; ``params`` [B, 2, P]: the views'
        recorded parameters."""
        total, terms = self.base(z_a, z_b)
        for name, weight in self.weights.items():
            term = objective_loss(predictions[name], both_orders(params, name, self.augment), name)
            terms[f"aug_{name}"] = term.detach()
            total = total + weight * term
        return total, terms


def _weights(cfg) -> dict[str, float]:
    return {name: float(cfg.loss.options[name]) for name in OBJECTIVES if name in OPTIONS}


def heads(cfg, feature_dim: int, embed_dim: int, ops: list[str]) -> AugSelfHeads:
    """The prediction heads the model carries (``core.model.PretrainModel``)."""
    if cfg.views.mode != "pair":
        raise ValueError("AugSelf compares two views: it needs views.mode=pair")
    names = [name for name, weight in _weights(cfg).items() if weight > 0]
    missing = [name for name in names if OBJECTIVES[name][0] not in cfg.augment.ops]
    if missing:
        raise ValueError(
            f"AugSelf objectives {missing} predict ops that augment.ops leaves out: set "
            + " ".join(f"loss.options.{name}=0" for name in missing)
        )
    return AugSelfHeads(feature_dim, names, int(cfg.loss.options["hidden"]))


def build(cfg, ops: list[str] | None = None) -> AugSelfLoss:
    """The method table's constructor (``core/methods.py``): VICReg plus AugSelf's objectives."""
    return AugSelfLoss(cfg.augment, _weights(cfg), cfg.loss.lam, cfg.loss.mu, cfg.loss.nu)
