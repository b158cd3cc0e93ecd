"""MAST: one embedding, one learnable mask per augmentation op, uncertainty-weighted invariance.

Implements the loss of ``docs/method.md`` (our reconstruction; the paper's equations are not
public):

  e_ij      = (z_ij - z'_ij)^2                                  per-dimension squared difference
  m_k       = sigmoid(theta_k)                                  mask of op k over the d dimensions
  l_ik      = sum_j m_kj e_ij / sum_j m_kj                      subspace error (mask-weighted mean)
  s_ik      = (sigma^2_ik + sigma'^2_ik) / 2                    pair variance (uncertainty head)
              (how s enters depends on uncertainty_norm, see below; "none" is the formula here)
  l~_ik     = l_ik / s_ik + log s_ik                            (l~_ik = l_ik without uncertainty)
  L_inv     = mean_i [ sum_k w_ik l~_ik / max(1, sum_k w_ik) ]  w_ik: gate of op k for sample i
  V, C      = VICReg's variance and covariance on the full, unmasked embeddings of every view
  R         = sum_k (mean_j m_kj - rho)^2                       mask density
  L         = lam L_inv + mu V + nu C + beta R (+ lam L_fit: the head's fit, detach mode)

Views: ``z`` holds V views; ``pairs[k] = (a, b)`` says which two views subspace k compares. Pair
mode uses the same pair (0, 1) for every op; factorized mode compares the anchor 0 with view k + 1.
With V views the variance term is the mean over views and the covariance term 2/V times the sum,
which is VICReg's scaling when V = 2.

``uncertainty_norm`` (why not the raw formula): with l~ = l / s + log s the optimum is s_ik = l_ik,
so the invariance term becomes sum log l_ik, whose pull grows without bound as errors shrink: on the
embedded config s ran to the clamp (e^-6) within ~100 steps, the invariance was weighted ~400 x and
the embedding's variance collapsed (``none``). Centring log s per op over the batch (``batch``)
fixes the overall scale but keeps the log-loss optimum (weights spread over e^+-6). The default,
``detach``, separates the two jobs: the head fits s to the observed errors by the same
heteroscedastic likelihood with the errors detached (so s estimates the expected error of a pair:
its difficulty), and the embedding gets the errors weighted by 1 / s (detached) normalised to mean 1
over the batch per op: ambiguous pairs are down-weighted, the total weight of the invariance term is
unchanged. ``min_ess`` tempers those weights to s^-t (t <= 1, the largest that keeps each op's
effective sample size (sum w)^2 / (B sum w^2) at or above it; logged as ``ess`` and ``temper``). The
head reads detached backbone features (``core.model``), so its fit moves the head alone.

``mask_objective`` (what moves the masks): ``invariance`` (default) lets the masks descend lam L_inv
like the rest of the network, which on the embedded runs made every op's mask pick the same
dimensions: every pair differs in crop, and the crop error dominates each op's subspace error.
``contrast`` gives the embedding L_inv with the masks detached, and the masks (with the embeddings
detached) the excess error of op k's subspace on pairs that differ in op k over pairs that do not:

  L_mask    = sum_k [ mean_{i: w_ik > 0} l_ik - mean_{i: w_ik = 0} l_ik ]
              (0 for an op without both kinds)

so an error every pair shares (crop's) cancels and mask k moves towards the dimensions that op k
leaves unchanged. The total adds lam L_mask (logged as ``mask_excess``); masks that need no gradient
(fixed ones) skip it. Means are over the process's batch (DDP averages the masks' gradients).

Variants: ``uncertainty=False`` (``mast_nounc``); fixed masks, e.g. a random partition of the
dimensions (``mast_fixed``, see ``random_partition``) or K = 1 all ones (the reduction identity to
VICReg).
"""

from __future__ import annotations

import torch
from torch import nn

from core.distributed import gather_with_grad
from pretrain.losses import mast_and
from pretrain.losses.terms import covariance_term, variance_term

LOG_VAR_RANGE = (-6.0, 6.0)  # clamp of log sigma^2, as method.md states
NORMS = ("detach", "batch", "none")
MASK_OBJECTIVES = ("invariance", "contrast")


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / (N sum w^2) per column of ``log_w`` [N, K]: 1 for equal weights, 1/N for one
    sample."""
    w = torch.exp(log_w - log_w.max(0).values)
    return w.sum(0).pow(2) / (log_w.shape[0] * w.pow(2).sum(0))


def tempering(log_w: torch.Tensor, min_ess: float, iterations: int = 30) -> torch.Tensor:
    """Per column, the largest t in [0, 1] with effective_sample_size(t log_w) >= min_ess (it falls
    as t grows: a stronger tilt concentrates the weights), found by bisection; 1 where t = 1 already
    keeps it."""
    ones = torch.ones(log_w.shape[1], dtype=log_w.dtype, device=log_w.device)
    if min_ess <= 0:
        return ones
    low, high = torch.zeros_like(ones), ones.clone()
    for _ in range(iterations):
        middle = (low + high) / 2
        keeps = effective_sample_size(log_w * middle) >= min_ess
        low, high = torch.where(keeps, middle, low), torch.where(keeps, high, middle)
    return torch.where(effective_sample_size(log_w) >= min_ess, ones, low)


class MASTLoss(nn.Module):
    """The loss only: the masks (``core.model.MaskBank``) and the uncertainty head belong to the
    model, so that DDP averages their gradients with the rest of the network."""

    def __init__(
        self,
        lam: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        beta: float = 1.0,
        rho: float = 0.5,
        uncertainty: bool = True,
        uncertainty_norm: str = "detach",
        eps: float = 1e-4,
        mask_objective: str = "invariance",
        min_ess: float = 0.0,
    ):
        """``lam, mu, nu, beta, rho`` as in method.md; ``uncertainty=False`` gives ``mast_nounc``;
        ``uncertainty_norm``: ``detach`` (default), ``batch`` or ``none``; ``mask_objective``:
        ``invariance`` (default) or ``contrast`` (see the module docstring); ``min_ess`` (detach
        mode): temper the 1 / s weights to w ~ s^-t so that each op's effective sample size stays at
        least this fraction of the batch (0: untempered, t = 1)."""
        super().__init__()
        if uncertainty_norm not in NORMS:
            raise ValueError(
                f"uncertainty_norm must be one of {', '.join(NORMS)}, got {uncertainty_norm!r}"
            )
        if mask_objective not in MASK_OBJECTIVES:
            raise ValueError(
                f"mask_objective must be one of {', '.join(MASK_OBJECTIVES)}, got "
                f"{mask_objective!r}"
            )
        self.lam, self.mu, self.nu, self.beta, self.rho = lam, mu, nu, beta, rho
        self.uncertainty, self.uncertainty_norm, self.eps = uncertainty, uncertainty_norm, eps
        self.mask_objective = mask_objective
        if not 0 <= min_ess <= 1:
            raise ValueError(f"min_ess is a fraction of the batch in [0, 1], got {min_ess}")
        self.min_ess = min_ess

    def subspace_errors(
        self, z: torch.Tensor, pairs: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """l_ik for every sample i and op k: [B, K]."""
        return self.masked_mean(self.pair_errors(z, pairs), masks)

    @staticmethod
    def pair_errors(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """e_ij of the compared views: [B, d] in pair mode (one matrix for every op), else [K, B,
        d]."""
        # read where the pairs are: the trainer keeps them on the CPU, so no wait on the device
        if bool((pairs == pairs[0]).all()):
            a, b = pairs[0].tolist()
            return (z[a] - z[b]).pow(2)
        # view by view, not z[index]: a view compared K times (the anchor) would get its gradient
        # summed by atomic adds on the CPU, in no fixed order, and a seed would not give one run
        views, compared = z.unbind(0), pairs.tolist()
        first = torch.stack([views[a] for a, _ in compared])
        second = torch.stack([views[b] for _, b in compared])
        return (first - second).pow(2)

    @staticmethod
    def masked_mean(errors: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mask-weighted mean over dimensions of ``pair_errors``' output: [B, K]."""
        weights = masks / masks.sum(dim=1, keepdim=True).clamp_min(1e-12)
        if errors.dim() == 2:
            return errors @ weights.T
        return torch.einsum("kbd,kd->bk", errors, weights)

    @staticmethod
    def excess_error(errors: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """L_mask from subspace errors [B, K]: per op, mean over pairs that differ in it minus the
        rest's."""
        differs = (gates > 0).to(errors.dtype)
        n_differ, n_same = differs.sum(0), (1 - differs).sum(0)
        excess = (errors * differs).sum(0) / n_differ.clamp_min(1) - (errors * (1 - differs)).sum(
            0
        ) / n_same.clamp_min(1)
        return (excess * ((n_differ > 0) & (n_same > 0))).sum()

    def forward(
        self,
        z: torch.Tensor,
        pairs: torch.Tensor,
        gates: torch.Tensor,
        masks: torch.Tensor,
        log_var: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``z`` [V, B, d] embeddings; ``pairs`` [K, 2] view indices; ``gates`` [B, K] w_ik;
        ``masks`` [K, d] in [0, 1]; ``log_var`` [V, B, K] log sigma^2 from the uncertainty head
        (with uncertainty)."""
        views, batch, dim = z.shape
        num_ops = masks.shape[0]
        if pairs.shape != (num_ops, 2) or gates.shape != (batch, num_ops) or masks.shape[1] != dim:
            raise ValueError(
                f"MAST loss got z {tuple(z.shape)}, pairs {tuple(pairs.shape)}, gates "
                f"{tuple(gates.shape)}, masks {tuple(masks.shape)}: they disagree on K or d"
            )
        stats: dict[str, torch.Tensor] = {}
        # fixed masks: nothing to move
        if self.mask_objective == "contrast" and masks.requires_grad:
            differences = self.pair_errors(z, pairs)  # computed once: both objectives read it
            errors = self.masked_mean(differences, masks.detach())
            stats["mask_excess"] = self.excess_error(
                self.masked_mean(differences.detach(), masks), gates
            )
        else:
            errors = self.subspace_errors(z, pairs, masks)
        head_fit = None  # the uncertainty head's own likelihood term (detach mode), reported apart
        if self.uncertainty:
            if log_var is None:
                raise ValueError(
                    "MAST loss with uncertainty needs log_var from the uncertainty head"
                )
            log_var = log_var.clamp(*LOG_VAR_RANGE)
            ops = torch.arange(num_ops, device=z.device)
            # [B, K]
            at = pairs.to(log_var.device, non_blocking=True)
            s = (log_var[at[:, 0], :, ops].exp() + log_var[at[:, 1], :, ops].exp()).T / 2
            log_s = s.log()
            stats["s_mean"] = s.detach().mean(0)  # the head's raw scale, logged before any centring
            if self.uncertainty_norm == "detach":
                log_w = gather_with_grad(-log_s.detach())  # the whole batch's, as the normalisation
                power = tempering(log_w, self.min_ess)
                stats["temper"], stats["ess"] = power, effective_sample_size(log_w * power)
                inv_s = torch.exp(-log_s.detach() * power)
                weights = inv_s / torch.exp(log_w * power).mean(0)
                head_fit = errors.detach() * torch.exp(-log_s) + log_s
                errors = errors * weights
            else:
                if self.uncertainty_norm == "batch":
                    log_s = log_s - gather_with_grad(log_s).mean(0)
                errors = errors * torch.exp(-log_s) + log_s
            stats["weight_spread"] = (
                log_s.detach().std(0) if batch > 1 else torch.zeros_like(log_s[0])
            )

        def gated_mean(values: torch.Tensor) -> torch.Tensor:
            return ((gates * values).sum(1) / gates.sum(1).clamp_min(1.0)).mean()

        invariance = gated_mean(errors)
        gathered = [gather_with_grad(z[v]) for v in range(views)]
        variance = torch.stack([variance_term(g, self.eps) for g in gathered]).mean()
        covariance = torch.stack([covariance_term(g) for g in gathered]).sum() * 2 / views
        density = (masks.mean(dim=1) - self.rho).pow(2).sum()
        total = (
            self.lam * invariance + self.mu * variance + self.nu * covariance + self.beta * density
        )
        if "mask_excess" in stats:
            total = total + self.lam * stats["mask_excess"]
        if head_fit is not None:
            # Same weight as the invariance it estimates; it moves only the head. Logged as
            # "unc_fit": the embedding's objective is the rest of the total.
            stats["unc_fit"] = gated_mean(head_fit)
            total = total + self.lam * stats["unc_fit"]
        stats.update(
            mask_density=masks.detach().mean(1), gate_rate=(gates.detach() > 0).float().mean(0)
        )
        return total, {
            "inv": invariance,
            "var": variance,
            "cov": covariance,
            "density": density,
            **stats,
        }


def heads(cfg, feature_dim: int, embed_dim: int, ops: list[str]) -> nn.Module | None:
    """Prediction heads of the MAST methods: the AND loss's subspace targets, if asked for."""
    if cfg.loss.target_weight > 0 and cfg.loss.combine != "and":
        raise ValueError("loss.target_weight needs loss.combine=and (the targets of owned dims)")
    return mast_and.heads(cfg, feature_dim, embed_dim, ops) if cfg.loss.combine == "and" else None


def build(cfg, ops: list[str] | None = None) -> nn.Module:
    """The method table's constructor (``core/methods.py``) for the MAST methods: the OR loss, or
    under ``loss.combine=and`` the AND loss of ``pretrain.losses.mast_and``."""
    if cfg.loss.combine == "and":
        return mast_and.build(cfg, ops)
    return MASTLoss(
        cfg.loss.lam,
        cfg.loss.mu,
        cfg.loss.nu,
        cfg.loss.beta,
        cfg.loss.rho,
        uncertainty=cfg.uses_uncertainty,
        uncertainty_norm=cfg.loss.uncertainty_norm,
        mask_objective=cfg.loss.mask_objective,
        min_ess=cfg.loss.min_ess,
    )
