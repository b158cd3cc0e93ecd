"""The suite's numerics version: bumped whenever a change alters the numbers a seeded run computes,
not only its speed. Checkpoints record it; the study (``scripts/study.py``) retrains a run whose
checkpoint has an older version, so that every run of one study is computed by the same arithmetic.

History:
  1  up to commit b5c665d.
  2  views: blur as depthwise convolutions grouped by radius (was shifted copies accumulated tap
     by tap); loss: covariance term from the N x N Gram matrix when N < d. Both differ from
     version 1 by float rounding only (blur: < 5e-7 before the uint8 rounding, about 1 pixel value
     in 20,000 moves by 1), which training amplifies into run-to-run differences the size of a
     seed's.
  3  pretraining: the uncertainty head reads detached backbone features (its fit trained the
     backbone before). Changes only runs with the head (``uses_head``); others keep version 2's
     numbers.
  4  grouped target heads (``loss.target_grouped``): their last biases, stacked one row per head,
     are optimised as biases (no weight decay; before, AdamW decayed them as weights), LARS takes
     one trust ratio per head's matrix (before, one per layer), and the last layer's padding is
     zero. Changes only runs with grouped heads (``uses_grouped_heads``).
  (no new version) 2026-12-07: factorized MAST sums the anchor view's gradient in a fixed order
     (before, atomic adds in no fixed order at 2+ threads): its runs had no fixed numbers, so none
     is stale (docs/reliability.md).
"""

from __future__ import annotations

from core.methods import METHODS, uses_uncertainty

NUMERICS = 4


def uses_head(config: dict) -> bool:
    """Whether a resolved pretraining config trains the uncertainty head (the method table's rule,
    ``core.methods.uses_uncertainty``)."""
    name = config.get("method")
    if name not in METHODS:  # not a pretraining run of the suite
        return False
    return uses_uncertainty(name, (config.get("loss") or {}).get("uncertainty"))


def uses_grouped_heads(config: dict) -> bool:
    """Whether a resolved pretraining config trains grouped subspace-target heads."""
    loss = config.get("loss") or {}
    return bool(loss.get("target_grouped")) and (loss.get("target_weight") or 0) > 0


#: version -> which resolved configs it changed (a run computed before it, of such a config, is
#: stale).
CHANGED = {2: lambda config: True, 3: uses_head, 4: uses_grouped_heads}


def is_current(version: int, config: dict) -> bool:
    """Whether a run computed at numerics ``version`` with the resolved ``config`` matches today's
    arithmetic."""
    return not any(changed(config) for v, changed in CHANGED.items() if version < v <= NUMERICS)
