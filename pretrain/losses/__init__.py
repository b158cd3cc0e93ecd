"""Loss modules, one file per method; each returns ``(total, terms)``."""

from pretrain.losses.mast import MASTLoss
from pretrain.losses.mast_and import MASTAndLoss
from pretrain.losses.vicreg import VICRegLoss

__all__ = ["MASTAndLoss", "MASTLoss", "VICRegLoss"]
