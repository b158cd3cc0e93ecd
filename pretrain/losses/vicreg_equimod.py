"""Equivariant VICReg in the EquiMod style (Devillers & Lefort, ICLR 2023), as SIE's VICReg variant
trains it (Garrido, Najman, LeCun, ICML 2023; facebookresearch/SIE, ``VICRegEquiMod``).

Two projectors read the backbone: the invariant one (the model's expander) gives z, z'; the
equivariant one gives e, e'. A predictor maps e and the encoded parameter difference t of the two
views to a prediction of e':

  L = VICReg(z, z') + equi_factor * [lam MSE(p(t, e), e') + mu (v(E) + v(E')) / 2
                                      + nu (c(E) + c(E'))]

with p a stack of ``predictor_layers`` Linear layers (ReLU between) on the concatenation [t, e], and
v, c VICReg's terms on the batch gathered across processes. t is the parameter difference of every
op the views record, in AugSelf's encoding (pretrain/losses/augself.py): crop centre and size, the
four jitter factors, whether the flips agree, blur sigma, the grayscale and solarize flags (12
numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.augment import AugmentConfig
from core.distributed import gather_with_grad
from core.model import build_expander, parse_spec
from pretrain.losses.augself import OBJECTIVES, parameter_target
from pretrain.losses.terms import covariance_term, variance_term
from pretrain.losses.vicreg import VICRegLoss

#: Defaults of ``loss.options``: the weight of the equivariant part (SIE's ``--equi-factor`` of
#: its published command) and the predictor's depth (SIE's ``--tf-num-layers``).
OPTIONS = {"equi_factor": 0.45, "predictor_layers": 1}

#: The parts of t, in order (AugSelf's objectives and the grayscale flag).
ENCODING = ("crop", "color", "flip", "blur", "sol", "gray")


def encode_difference(params: torch.Tensor, augment: AugmentConfig) -> torch.Tensor:
    """t for views 1 and 2 of ``params`` [B, 2, P]: [B, 12]."""
    return torch.cat(
        [parameter_target(params[:, 0], params[:, 1], name, augment) for name in ENCODING], 1
    )


def predictor(embed_dim: int, latent_dim: int, layers: int) -> nn.Sequential:
    """SIE's MLP predictor: Linear(d + |t|, d), then ``layers - 1`` Linear(d, d), ReLU between."""
    if layers < 1:
        raise ValueError(f"loss.options.predictor_layers must be >= 1, got {layers}")
    modules: list[nn.Module] = [nn.Linear(embed_dim + latent_dim, embed_dim)]
    for _ in range(layers - 1):
        modules += [nn.ReLU(), nn.Linear(embed_dim, embed_dim)]
    return nn.Sequential(*modules)


class EquiModHeads(nn.Module):
    """The equivariant projector and the predictor."""

    def __init__(self, feature_dim: int, expander: str, augment: AugmentConfig, layers: int = 1):
        super().__init__()
        self.augment = augment
        latent = sum(OBJECTIVES[name][1] for name in ENCODING)
        self.projector = build_expander(feature_dim, expander)
        self.predictor = predictor(parse_spec(expander)[-1], latent, layers)

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """-> the equivariant embeddings ``e_a``, ``e_b`` [B, d] and ``predicted`` e_b [B, d]."""
        if params is None:
            raise ValueError("the EquiMod predictor needs the views' recorded parameters")
        e_a, e_b = self.projector(features[0]), self.projector(features[1])
        t = encode_difference(params, self.augment).to(e_a.dtype)
        return {"e_a": e_a, "e_b": e_b, "predicted": self.predictor(torch.cat([t, e_a], 1))}


class VICRegEquiModLoss(nn.Module):
    def __init__(
        self,
        equi_factor: float = 0.45,
        lam: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        eps: float = 1e-4,
    ):
        """``equi_factor``: weight of the equivariant part; ``lam, mu, nu``: VICReg's, for both
        parts."""
        super().__init__()
        self.equi_factor, self.eps = equi_factor, eps
        self.lam, self.mu, self.nu = lam, mu, nu
        self.invariant = VICRegLoss(lam, mu, nu, eps)

    def forward(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        predictions: dict[str, torch.Tensor],
        params: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``predictions``: what ``EquiModHeads`` returned."""
        total, terms = self.invariant(z_a, z_b)
        # at least float32 (the heads may run under autocast)
        e_a, e_b, predicted = (
            predictions[k].to(torch.promote_types(predictions[k].dtype, torch.float32))
            for k in ("e_a", "e_b", "predicted")
        )
        prediction = F.mse_loss(predicted, e_b)
        e_a, e_b = gather_with_grad(e_a), gather_with_grad(e_b)
        variance = (variance_term(e_a, self.eps) + variance_term(e_b, self.eps)) / 2
        covariance = covariance_term(e_a) + covariance_term(e_b)
        equivariant = self.lam * prediction + self.mu * variance + self.nu * covariance
        terms.update(equi_pred=prediction, equi_var=variance, equi_cov=covariance)
        return total + self.equi_factor * equivariant, terms


def heads(cfg, feature_dim: int, embed_dim: int, ops: list[str]) -> EquiModHeads:
    """The equivariant projector (the expander's shape) and the predictor."""
    if cfg.views.mode != "pair":
        raise ValueError("EquiMod compares two views: it needs views.mode=pair")
    layers = int(cfg.loss.options["predictor_layers"])
    return EquiModHeads(feature_dim, cfg.model.expander, cfg.augment, layers)


def build(cfg, ops: list[str] | None = None) -> VICRegEquiModLoss:
    """The method table's constructor (``core/methods.py``)."""
    return VICRegEquiModLoss(
        cfg.loss.options["equi_factor"], cfg.loss.lam, cfg.loss.mu, cfg.loss.nu
    )
