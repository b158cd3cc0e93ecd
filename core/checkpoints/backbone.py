"""A backbone from any supported checkpoint, or a random-init one, with what records say of it."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import torch

from core.backbones import arch_label, build_backbone
from core.checkpoints.format import CheckpointError, load_file
from core.checkpoints.importers import extract_backbone

log = logging.getLogger("core.checkpoints")

#: How the random-init floor is initialised, recorded with its numbers: the residual branches on,
#: as in torchvision's ResNet. Floors recorded without it (before 2026-12-06) had every residual
#: branch's last BatchNorm at zero (the SSL training init): a random network nearly constant.
FLOOR_INIT = "zero_init_residual=false"


@dataclasses.dataclass
class Backbone:
    """A backbone with what records say about it."""

    model: torch.nn.Module
    method: str
    arch: str
    base_width: int
    ckpt: Path | None = None
    pretrain_epochs: int | None = None
    pretrain_seed: int | None = None
    #: The initialisation of a backbone that was never trained (``FLOOR_INIT``); None otherwise.
    init: str | None = None

    @property
    def arch_label(self) -> str:
        """``resnet50``, or ``resnet18w16`` for a reduced base width."""
        return arch_label(self.arch, self.base_width)


def load_backbone(path: str | Path, fmt: str = "auto") -> Backbone:
    """The backbone of any supported checkpoint (suite, torchvision, MoCo, solo-learn, lightly,
    mmselfsup), loaded strictly; heads and projectors are dropped (and logged)."""
    obj = load_file(path)
    try:
        weights, report = extract_backbone(obj, fmt)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if report.dropped:
        log.info(
            "%s: %s layout, dropped %d non-backbone keys", path, report.format, len(report.dropped)
        )
    model = build_backbone(report.arch, report.base_width)
    model.load_state_dict(weights, strict=True)
    suite = report.format == "mast-suite"
    config = obj.get("config") if suite and isinstance(obj.get("config"), dict) else {}
    method = obj.get("method", "unknown") if suite else f"imported:{report.format}"
    return Backbone(
        model.eval(),
        method,
        report.arch,
        report.base_width,
        Path(path),
        obj.get("epoch") if suite else None,
        config.get("seed"),
    )


def random_backbone(arch: str, base_width: int, seed: int) -> Backbone:
    """The floor: a freshly initialised backbone (torchvision's init, ``FLOOR_INIT``) drawn with
    ``seed``."""
    torch.manual_seed(seed)
    model = build_backbone(arch, base_width, zero_init_residual=False).eval()
    return Backbone(model, "random-init", arch, base_width, None, 0, seed, init=FLOOR_INIT)


class PixelFeatures(torch.nn.Module):
    """The image itself as the representation: the channel mean of the normalised input, flattened
    (a grey image's three equal channels count once)."""

    def __init__(self) -> None:
        super().__init__()
        # a state, so that the weight hash (the feature cache's key) names this "network"
        self.register_buffer("pixels", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1).flatten(1)


def pixel_backbone() -> Backbone:
    """The raw-pixel reference: what the frozen-feature protocols make of the pixels alone."""
    return Backbone(PixelFeatures().eval(), "pixels", "pixels", 64, None, 0)


def load_suite_backbone(
    path: str | None, arch: str = "resnet18", base_width: int = 64, seed: int = 0
) -> torch.nn.Module:
    """The backbone module of a checkpoint, or a random-init one (the floor) when ``path`` is
    None."""
    return (random_backbone(arch, base_width, seed) if path is None else load_backbone(path)).model


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state_dict (names, dtypes, shapes, bytes): the backbone's
    identity."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(
            tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()
