"""MAST with AND-combined subspaces (``loss.combine: and``; docs/method.md, "AND combination").

Every dimension j has an assignment a_j over {shared, op_1, ..., op_K'} (a softmax, so ops compete
for dimensions); the K' ops are the non-base ones (crop, sampled afresh in every pair, is shared by
every dimension). A dimension owned by op k may vary with op k and with nothing else, so a pair that
differs in the ops S is excused on it only where k is in S:

  e_ij      = (z_ij - z'_ij)^2
  p_ij      = 1 - sum_k g_ik a_kj            weight of dimension j for pair i (g_ik: gate of op k)
  L_inv     = mean_ij p_ij e_ij              assignment detached: the embedding never moves it
  c_kj      = corr_i(g_ik, e_ij)             how much of dimension j's error op k's difference
                                             explains
  L_assign  = -mean_j sum_k a_kj (c_kj - m) + sum_k relu(mean_j a_kj - cap)
                                             embeddings detached; the shared class scores 0
  L         = lam L_inv + mu V + nu C + L_assign

so a dimension goes to the op whose difference explains its error by more than the margin m, and
stays shared where none does (m keeps batch noise, a correlation of about 1 / sqrt(B), from handing
out dimensions). The cap bounds each op's share of the dimensions (default 1 / (K' + 1)): without it
the excused dimensions learn to encode their op, its correlation grows, and one op took 96% of the
dimensions within 600 steps of the embedded run (grayscale), excusing a third of the pairs on nearly
everything. V and C are VICReg's on the full embeddings. With every dimension shared, L is VICReg's
loss exactly. A fixed assignment (``fixed``: a random one over the K' + 1 classes) has no L_assign:
the control.

A positive target for the excused dimensions (``loss.target_weight`` t > 0): op k's subspace
predicts op k's parameter difference, AugSelf's objective (pretrain/losses/augself.py) read from
[a_k * z, a_k * z'] instead of the backbone features, both view orders:

  L_target  = sum_k L_w(k)(h_k([a_k * z_a, a_k * z_b]), omega(a) - omega(b))
  L         = ... + t L_target

so the dimensions an op owns are trained to carry what that op changes, and the target's gradient
also reaches the assignment (a dimension that helps predict op k leans towards op k).
"""

from __future__ import annotations

import torch
from torch import nn

from core.augment import AugmentConfig
from core.distributed import gather_with_grad
from pretrain.losses.augself import OBJECTIVES, both_orders, mlp, objective_loss
from pretrain.losses.terms import covariance_term, variance_term

#: The AugSelf objective each owning op's subspace predicts under ``loss.target_weight``.
TARGETS = {
    "flip": "flip",
    "color_jitter": "color",
    "grayscale": "gray",
    "blur": "blur",
    "solarize": "sol",
}
#: Hidden width of the target heads by default (AugSelf's; ``loss.target_hidden``).
TARGET_HIDDEN = 512


def batch_correlation(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation over the batch of every column of ``x`` [B, K] with every column of ``y``
    [B, d]: [K, d]; a constant column correlates 0."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    cov = xc.T @ yc / x.shape[0]
    scale = x.std(0, unbiased=False)[:, None] * y.std(0, unbiased=False)[None, :]
    return torch.where(scale > eps, cov / scale.clamp_min(eps), torch.zeros_like(cov))


class SubspaceTargetHeads(nn.Module):
    """One AugSelf head per owning op, on that op's subspace of the two embeddings."""

    def __init__(self, embed_dim: int, owned: list[str], hidden: int = TARGET_HIDDEN):
        super().__init__()
        self.names = [TARGETS[op] for op in owned]
        self.heads = nn.ModuleList(
            [mlp(2 * embed_dim, hidden, OBJECTIVES[name][1]) for name in self.names]
        )

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``z`` [2, B, d], ``masks`` the assignment [K' + 1, d] -> {name: [2B, n]}: rows of
        order (1, 2), then (2, 1)."""
        if masks is None:
            raise ValueError("the subspace targets need the AND assignment")
        out = {}
        for k, (name, head) in enumerate(zip(self.names, self.heads)):
            z_a, z_b = z[0] * masks[k + 1], z[1] * masks[k + 1]
            out[name] = head(torch.cat([torch.cat([z_a, z_b], 1), torch.cat([z_b, z_a], 1)]))
        return out


class GroupedTargetHeads(nn.Module):
    """``SubspaceTargetHeads`` computed together (``loss.target_grouped``): each layer's K' weight
    matrices in one tensor and one batched product, the batch norms as one over K' x hidden
    channels, the last layer padded to the widest output. The same function as separate heads
    (``from_separate`` copies their weights); its numbers differ by float rounding, its step has
    about a fifth of the operators. The optimiser treats each head's matrices as separate heads'
    (``pretrain.optim``: LARS per matrix, the last biases as biases), and the padding is zero, so
    that the heads train as separate ones do too."""

    #: what ``pretrain.optim.param_groups`` reads: tensors holding one matrix (bias) per head
    stacked_weights = ("w1", "w2", "w3")
    stacked_biases = ("b3",)

    def __init__(self, embed_dim: int, owned: list[str], hidden: int = TARGET_HIDDEN):
        super().__init__()
        self.names = [TARGETS[op] for op in owned]
        self.widths = [OBJECTIVES[name][1] for name in self.names]
        heads, n_out = len(self.names), max(self.widths)
        self.w1 = nn.Parameter(torch.empty(heads, 2 * embed_dim, hidden))
        self.w2 = nn.Parameter(torch.empty(heads, hidden, hidden))
        self.w3 = nn.Parameter(torch.empty(heads, hidden, n_out))
        self.b3 = nn.Parameter(torch.empty(heads, 1, n_out))
        self.bn1, self.bn2 = nn.BatchNorm1d(heads * hidden), nn.BatchNorm1d(heads * hidden)
        for w in (self.w1, self.w2, self.w3):  # nn.Linear's initialisation, per head
            bound = 1.0 / w.shape[1] ** 0.5
            nn.init.uniform_(w, -bound, bound)
        nn.init.uniform_(self.b3, -1.0 / hidden**0.5, 1.0 / hidden**0.5)
        with torch.no_grad():  # the padding: its outputs are dropped; zero, it is out of the norms
            for k, n in enumerate(self.widths):
                self.w3[k, :, n:] = 0.0
                self.b3[k, :, n:] = 0.0

    @torch.no_grad()
    def from_separate(self, separate: SubspaceTargetHeads) -> GroupedTargetHeads:
        """Take the weights (and batch-norm statistics) of separate heads of the same shapes."""
        hidden = self.w2.shape[1]
        for k, head in enumerate(separate.heads):
            # mlp()'s layers: Linear, BatchNorm1d, ReLU, Linear, BatchNorm1d, ReLU, Linear
            layers = list(head.children())
            first, second, last = [m for m in layers if isinstance(m, nn.Linear)]
            norm1, norm2 = [m for m in layers if isinstance(m, nn.BatchNorm1d)]
            n = self.widths[k]
            self.w1[k].copy_(first.weight.T)
            self.w2[k].copy_(second.weight.T)
            self.w3[k, :, :n].copy_(last.weight.T)
            self.b3[k, 0, :n].copy_(last.bias)
            rows = slice(k * hidden, (k + 1) * hidden)
            for mine, theirs in ((self.bn1, norm1), (self.bn2, norm2)):
                # state_dict's tensors share storage with the module's: copied into in place
                into = mine.state_dict()
                for key, value in theirs.state_dict().items():
                    (into[key] if key == "num_batches_tracked" else into[key][rows]).copy_(value)
        return self

    def _norm(self, x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
        """[K', N, h] through one batch norm over the K' x h channels, then ReLU."""
        heads, rows, hidden = x.shape
        y = bn(x.transpose(0, 1).reshape(rows, heads * hidden))
        return torch.relu(y).reshape(rows, heads, hidden).transpose(0, 1)

    def forward(
        self,
        features: torch.Tensor,
        z: torch.Tensor,
        masks: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """As ``SubspaceTargetHeads.forward``."""
        if masks is None:
            raise ValueError("the subspace targets need the AND assignment")
        masked = z[:, None] * masks[1:, None, :]  # [2, K', B, d]
        a, b = masked[0], masked[1]
        x = torch.cat([torch.cat([a, b], 2), torch.cat([b, a], 2)], 1)  # [K', 2B, 2d]
        x = self._norm(torch.bmm(x, self.w1), self.bn1)
        x = self._norm(torch.bmm(x, self.w2), self.bn2)
        out = torch.baddbmm(self.b3, x, self.w3)  # [K', 2B, n_max]
        return {name: out[k, :, :n] for k, (name, n) in enumerate(zip(self.names, self.widths))}


class MASTAndLoss(nn.Module):
    def __init__(
        self,
        owned: list[int],
        lam: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        margin: float = 0.1,
        cap: float | None = None,
        eps: float = 1e-4,
        target_weight: float = 0.0,
        augment: AugmentConfig | None = None,
    ):
        """``owned``: indices (in the K ops' order) of the ops that can own dimensions, i.e. the
        non-base ops; ``lam, mu, nu`` as VICReg's; ``margin``: the correlation an op must exceed to
        take a dimension; ``cap``: the largest share of the dimensions one op may own (None: 1 / (K'
        + 1)); ``target_weight``: t of the subspace targets (0: none), whose parameter differences
        read ``augment``'s strengths."""
        super().__init__()
        self.owned, self.margin = list(owned), margin
        self.cap = cap if cap is not None else 1.0 / (len(self.owned) + 1)
        self.lam, self.mu, self.nu, self.eps = lam, mu, nu, eps
        self.target_weight, self.augment = target_weight, augment or AugmentConfig()

    def forward(
        self,
        z: torch.Tensor,
        pairs: torch.Tensor,
        gates: torch.Tensor,
        assignment: torch.Tensor,
        strengths: torch.Tensor | None = None,
        predictions: dict[str, torch.Tensor] | None = None,
        params: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``z`` [2, B, d]; ``pairs`` [K, 2] (all (0, 1): AND needs pair mode); ``gates`` [B, K]
        w_ik; ``assignment`` [K' + 1, d], columns summing to 1 (row 0: shared); ``strengths`` [B, K]
        d_ik, what the assignment objective correlates with (default: the gates); with a target
        weight, ``predictions`` (``SubspaceTargetHeads``') and the views' ``params`` [B, 2, P]."""
        views, batch, dim = z.shape
        if views != 2 or not bool((pairs == pairs[0]).all()):
            raise ValueError(
                "loss.combine=and compares one pair per image: it needs views.mode=pair"
            )
        if assignment.shape != (len(self.owned) + 1, dim) or gates.shape[0] != batch:
            raise ValueError(
                f"AND loss got z {tuple(z.shape)}, gates {tuple(gates.shape)}, assignment "
                f"{tuple(assignment.shape)} for {len(self.owned)} owning ops"
            )
        errors = (z[0] - z[1]).pow(2)  # [B, d]
        owned_gates = gates[:, self.owned]  # [B, K']
        weights = 1.0 - owned_gates @ assignment[1:].detach()  # [B, d], in [0, 1]
        invariance = (weights * errors).mean()
        gathered = [gather_with_grad(z[v]) for v in range(views)]
        variance = torch.stack([variance_term(g, self.eps) for g in gathered]).mean()
        covariance = torch.stack([covariance_term(g) for g in gathered]).sum()
        total = self.lam * invariance + self.mu * variance + self.nu * covariance
        stats: dict[str, torch.Tensor] = {"excused": 1.0 - weights.detach().mean()}
        if assignment.requires_grad:
            signal = (strengths if strengths is not None else gates)[:, self.owned]
            # [K', d]
            attribution = batch_correlation(signal.detach().to(errors.dtype), errors.detach())
            over = (assignment[1:].mean(1) - self.cap).clamp_min(0).sum()
            stats["assign"] = -(assignment[1:] * (attribution - self.margin)).sum(0).mean() + over
            stats["attribution"] = attribution.mean(1)
            total = total + stats["assign"]
        if self.target_weight > 0:
            if predictions is None or params is None:
                raise ValueError("loss.target_weight > 0 needs the target heads' predictions")
            target = torch.zeros((), device=z.device)
            for name, prediction in predictions.items():
                term = objective_loss(prediction, both_orders(params, name, self.augment), name)
                stats[f"target_{name}"] = term.detach()
                target = target + term
            total = total + self.target_weight * target
        share = assignment.detach().mean(1)
        stats.update(
            assign_share=share[1:],
            shared_share=share[0],
            gate_rate=(gates.detach() > 0).float().mean(0),
        )
        return total, {"inv": invariance, "var": variance, "cov": covariance, **stats}


def owned_ops(cfg, ops: list[str]) -> list[int]:
    """Indices of the ops that own dimensions under AND: every op but the base ones (crop)."""
    return [k for k, op in enumerate(ops) if op not in cfg.views.base]


def check_combination(cfg) -> None:
    """The AND combination's own limits, as a config error before any work."""
    if cfg.loss.combine != "and" or not cfg.uses_masks:
        return
    if cfg.views.mode != "pair":
        raise ValueError(
            "loss.combine=and needs views.mode=pair (factorized pairs differ in one op, where AND "
            "and OR agree: use loss.combine=or)"
        )
    if cfg.uses_uncertainty:
        raise ValueError(
            "loss.combine=and has no uncertainty weighting yet: set loss.uncertainty=false or use "
            "method=mast_nounc"
        )


def heads(
    cfg, feature_dim: int, embed_dim: int, ops: list[str]
) -> SubspaceTargetHeads | GroupedTargetHeads | None:
    """The subspace target heads (``loss.target_weight`` > 0; grouped with
    ``loss.target_grouped``), or None."""
    if cfg.loss.target_weight <= 0:
        return None
    owned = [ops[k] for k in owned_ops(cfg, ops)]
    kind = GroupedTargetHeads if cfg.loss.target_grouped else SubspaceTargetHeads
    return kind(embed_dim, owned, cfg.loss.target_hidden)


def build(cfg, ops: list[str] | None = None) -> MASTAndLoss:
    """The AND loss of a MAST config (``loss.combine=and``); ``ops``: the K op names."""
    check_combination(cfg)
    if ops is None:
        raise ValueError("the AND loss needs the op names (build_loss(cfg, ops))")
    return MASTAndLoss(
        owned_ops(cfg, ops),
        cfg.loss.lam,
        cfg.loss.mu,
        cfg.loss.nu,
        cfg.loss.assign_margin,
        cfg.loss.assign_cap,
        target_weight=cfg.loss.target_weight,
        augment=cfg.augment,
    )
