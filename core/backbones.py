"""torchvision ResNet backbones without the classifier, with an optional reduced width for CPU runs.

``build_backbone("resnet18", base_width=16)`` keeps torchvision's module names (so state_dicts stay
in the torchvision layout every tool reads) and scales every stage's channels by ``base_width /
64``.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchvision.models import resnet

ARCHS = {
    "resnet18": (resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (resnet.Bottleneck, [3, 4, 23, 3]),
}


class _ScaledResNet(resnet.ResNet):
    """torchvision's ResNet with every stage's planes scaled by ``base_width / 64``."""

    def __init__(self, block: type[nn.Module], layers: list[int], base_width: int, **kwargs):
        self._scale = base_width / 64
        self._stem = base_width
        super().__init__(block, layers, **kwargs)
        # torchvision builds a 64-channel stem before the stages; rebuild it at the reduced width.
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(base_width)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001 - torchvision's signature
        if planes == 64:  # first stage: its input is the stem
            self.inplanes = self._stem
        return super()._make_layer(
            block, max(1, round(planes * self._scale)), blocks, stride, dilate
        )


def build_backbone(
    arch: str = "resnet50", base_width: int = 64, zero_init_residual: bool = True
) -> nn.Module:
    """A ResNet whose forward returns the pooled feature (``fc`` is Identity); ``.feature_dim``
    gives its size."""
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone '{arch}'; available: {', '.join(ARCHS)}")
    if base_width < 1:
        raise ValueError(f"base_width must be positive, got {base_width}")
    block, layers = ARCHS[arch]
    if base_width == 64:
        model = resnet.ResNet(block, layers, zero_init_residual=zero_init_residual)
    else:
        model = _ScaledResNet(block, layers, base_width, zero_init_residual=zero_init_residual)
    # fc is built before the width change, so read the width off the last stage.
    model.feature_dim = max(1, round(512 * base_width / 64)) * block.expansion
    model.fc = nn.Identity()
    return model


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors in torchvision layout, without ``fc``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def arch_of(model: nn.Module) -> tuple[str, int] | None:
    """``(arch, base_width)`` of a backbone ``build_backbone`` made, or None for another network."""
    if not isinstance(model, resnet.ResNet):
        return None
    blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    block = type(model.layer1[0])
    arch = next(
        (name for name, (kind, layers) in ARCHS.items() if kind is block and layers == blocks), None
    )
    return (arch, model.conv1.out_channels) if arch else None


def parse_arch(label: str) -> tuple[str, int]:
    """``resnet18w16`` -> (``resnet18``, 16); ``resnet50`` -> (``resnet50``, 64): the inverse of
    ``arch_label``. A ValueError names the label and the architectures there are."""
    found = re.fullmatch(r"(resnet\d+)(?:w(\d+))?", label)
    if not found or found.group(1) not in ARCHS or found.group(2) == "0":
        raise ValueError(
            f"{label!r} is not an architecture label like resnet50 or resnet18w16 "
            f"(architectures: {', '.join(ARCHS)})"
        )
    return found.group(1), int(found.group(2) or 64)


def arch_label(arch: str, base_width: int) -> str:
    """``resnet50``, or ``resnet18w16`` for a reduced base width."""
    return arch if base_width == 64 else f"{arch}w{base_width}"
