"""Loss modules, one file per method; each returns ``(total, terms)``."""
from pretrain.losses.mast import MASTLoss
from pretrain.losses.vicreg import VICRegLoss

__all__ = ["MASTLoss", "VICRegLoss"]
