"""The method table: what each pretraining method is made of.

The trainer builds its loss from the table (``pretrain/losses/<loss>.py``, whose ``build(cfg, ops)``
makes the loss module), the config accepts exactly the table's names, and the numerics rule and the
analyses read the table or what the trainer wrote from it. A new method is one loss module, one
config under ``configs/pretrain/`` and one line here.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Method:
    #: The loss module under ``pretrain/losses/``.
    loss: str
    #: none (one embedding, no subspaces), learned (MAST's masks, or its assignment under
    #: ``loss.combine=and``) or fixed (a random partition or assignment: the control).
    masks: Literal["none", "learned", "fixed"] = "none"
    #: The uncertainty head's default (``loss.uncertainty`` overrides it where there are masks;
    #: a method without masks has no head).
    uncertainty: bool = False
    #: A target network: an exponential moving average of the backbone and expander (BYOL's), at
    #: the momentum the loss module's ``momentum(cfg, step, total_steps)`` gives.
    ema_target: bool = False


METHODS: dict[str, Method] = {
    "vicreg": Method("vicreg"),
    "mast": Method("mast", "learned", uncertainty=True),
    "mast_nounc": Method("mast", "learned"),
    "mast_fixed": Method("mast", "fixed", uncertainty=True),
    "simclr": Method("simclr"),
    "barlow_twins": Method("barlow_twins"),
    "augself": Method("augself"),
    "vicreg_equimod": Method("vicreg_equimod"),
    "byol": Method("byol", ema_target=True),
    "looc": Method("looc"),
}


def method(name: str) -> Method:
    """The table's entry, or a ValueError that lists the methods there are."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]


def has_masks(name: str) -> bool:
    """Whether method ``name`` has subspaces (masks or an assignment); False for a name the table
    does not know (an imported checkpoint's)."""
    return name in METHODS and METHODS[name].masks != "none"


def uses_uncertainty(name: str, flag: bool | None = None) -> bool:
    """Whether method ``name`` with ``loss.uncertainty = flag`` trains the uncertainty head."""
    entry = method(name)
    if entry.masks == "none":
        return False
    return entry.uncertainty if flag is None else bool(flag)


def mask_kind(
    name: str, combine: str = "or"
) -> Literal["none", "learned", "fixed", "assign", "assign_fixed"]:
    """none, learned / fixed masks (OR), or a learned / fixed assignment (AND)."""
    masks = method(name).masks
    if masks == "none" or combine != "and":
        return masks
    return "assign_fixed" if masks == "fixed" else "assign"
