"""The pretraining config: every open choice of method.md is a key here."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Literal

from core.augment import AugmentConfig
from core.config import ConfigError, PretrainDataConfig, RunConfig, TrainConfig
from core.methods import METHODS, has_masks, mask_kind, uses_uncertainty
from core.views import ViewsConfig


@dataclasses.dataclass
class ModelConfig:
    arch: str = "resnet50"
    #: Channels of the first ResNet stage (64 = torchvision's network; 16 or 32 for CPU runs).
    base_width: int = 64
    #: Expander layer sizes, VICReg's notation; the last is the embedding dimension d.
    expander: str = "8192-8192-8192"
    uncertainty_hidden: int = 512
    mask_init_std: float = 0.01


@dataclasses.dataclass
class LossConfig:
    """Weights of method.md: L = lam L_inv + mu V + nu C + beta R; rho = mask density target."""

    lam: float = 25.0
    mu: float = 25.0
    nu: float = 1.0
    beta: float = 1.0
    rho: float = 0.5
    #: w_ik = 1[d_ik > 0] (binary) or d_ik (strength).
    gate: Literal["binary", "strength"] = "binary"
    #: How s weights the invariance (pretrain/losses/mast.py): detach (head fits s to detached
    #: errors, the embedding gets 1/s weights of mean 1), batch (log s centred over the batch), none
    #: (l/s + log s as is).
    uncertainty_norm: Literal["detach", "batch", "none"] = "detach"
    #: What moves learned masks: invariance (they descend lam L_inv with the network) or contrast
    #: (the excess error of op k's subspace on pairs that differ in op k over pairs that do not;
    #: pretrain/losses/mast.py).
    mask_objective: Literal["invariance", "contrast"] = "invariance"
    #: How a pair's subspaces combine (docs/method.md): or (the mean of the differing ops' masked
    #: errors) or and (each non-base op owns dimensions through a learned softmax assignment; a pair
    #: is excused on the dimensions of the ops it differs in; pretrain/losses/mast_and.py). and
    #: needs views.mode=pair.
    combine: Literal["or", "and"] = "or"
    #: and: the batch correlation between an op's difference and a dimension's error that the op
    #: must exceed to take the dimension from the shared class (about 1 / sqrt(batch) keeps noise
    #: from handing dims out).
    assign_margin: float = 0.1
    #: and: the largest share of the dimensions one op may own (null: 1 / (number of owning ops +
    #: 1)).
    assign_cap: float | None = None
    #: and: weight of the subspace targets (0: none): each owning op's dimensions predict that
    #: op's parameter difference, AugSelf's objective (pretrain/losses/mast_and.py).
    target_weight: float = 0.0
    #: and: hidden width of each subspace target head (AugSelf's heads: 512); the heads are most of
    #: the extra cost of a MAST step over VICReg's (docs/method.md, "Cost of the subspace targets").
    target_hidden: int = 512
    #: and: compute the target heads together, one batched product per layer (the same heads; their
    #: numbers differ from separate heads' by float rounding, their step has fewer operators).
    target_grouped: bool = False
    #: The uncertainty head on or off (null: the method's default: on for mast and mast_fixed).
    uncertainty: bool | None = None
    #: detach mode: the 1/s weights are tempered (w ~ s^-t, t <= 1 the largest that keeps it) so
    #: that each op's effective sample size (sum w)^2 / sum w^2 stays at least this fraction of the
    #: batch (0: untempered).
    min_ess: float = 0.0
    #: The method's own hyper-parameters (SimCLR's temperature, Barlow Twins' lambd, ...) by the
    #: names its loss module declares in ``OPTIONS`` (pretrain/losses/<loss>.py); unset ones take
    #: the module's defaults, and the resolved config records them.
    options: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimConfig:
    name: Literal["lars", "sgd", "adamw"] = "lars"
    #: lr = base_lr x batch_size / 256 (VICReg's rule).
    base_lr: float = 0.2
    weight_decay: float = 1e-6
    momentum: float = 0.9
    eta: float = 0.001
    #: Base lr of the masks and the uncertainty head (null: base_lr); scaled by batch / 256 too.
    mask_lr: float | None = None
    warmup_epochs: float = 10.0


@dataclasses.dataclass
class PretrainTrainConfig(TrainConfig):
    epochs: int = 100
    batch_size: int = 256
    #: Stop after this many steps in total (a checkpoint is written there); null: run every epoch.
    max_steps: int | None = None
    #: Also checkpoint every N steps (0: at the end of every epoch only).
    checkpoint_every_steps: int = 0
    #: Keep epoch_<n>.pt every N epochs besides last.pt (0: keep none).
    keep_every: int = 0
    log_every: int = 10
    #: CUDA only: autocast dtype and SyncBatchNorm across GPUs. channels_last applies on CPU too
    #: (oneDNN).
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    channels_last: bool = True
    sync_bn: bool = True
    #: CUDA only: torch.compile the network's forward (inductor); the first steps compile (a minute
    #: or so), later ones run fused kernels, and floats differ from eager in the last bits.
    compile: bool = False


@dataclasses.dataclass
class PretrainConfig(RunConfig):
    #: A method of the table in core/methods.py.
    method: str = dataclasses.field(default="mast", metadata={"choices": lambda: tuple(METHODS)})
    data: PretrainDataConfig = dataclasses.field(default_factory=PretrainDataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: PretrainTrainConfig = dataclasses.field(default_factory=PretrainTrainConfig)

    def __post_init__(self) -> None:
        self.loss.options = method_options(self.method, self.loss.options)
        if self.loss.target_hidden < 1:
            raise ConfigError(
                f"loss.target_hidden must be a width of at least 1, got {self.loss.target_hidden}"
            )
        if self.data.decode == "device" and self.views.render != "device":
            raise ConfigError(
                "data.decode: device needs views.render: device (the loader then hands the "
                "training device undecoded files); set both, or data.decode: loader"
            )

    @property
    def uses_masks(self) -> bool:
        return has_masks(self.method)

    @property
    def mask_kind(self) -> Literal["none", "learned", "fixed", "assign", "assign_fixed"]:
        """none (vicreg), learned / fixed masks (OR), or a learned / fixed assignment (AND)."""
        return mask_kind(self.method, self.loss.combine)

    @property
    def uses_uncertainty(self) -> bool:
        return uses_uncertainty(self.method, self.loss.uncertainty)


def method_options(method: str, given: dict[str, float]) -> dict[str, float]:
    """``given`` completed with the defaults the method's loss module declares (``OPTIONS``); a
    ConfigError names an option the module does not have, and the ones it has."""
    if method not in METHODS:  # the config's choices check reports it
        return dict(given)
    module = importlib.import_module(f"pretrain.losses.{METHODS[method].loss}")
    defaults: dict[str, float] = dict(getattr(module, "OPTIONS", {}))
    for name in given:
        if name not in defaults:
            has = ", ".join(f"{k} (default {v:g})" for k, v in defaults.items()) or "none"
            raise ConfigError(
                f"unknown option 'loss.options.{name}' for method {method!r}; its options: {has}"
            )
    return {**defaults, **given}
