"""Backbone hand-off to MMDetection: the file its ``init_cfg=dict(type="Pretrained", ...)`` loads,
and our own check that every ResNet tensor of the built detector was filled from it.

mmengine loads pretrained weights with ``strict=False`` and only logs missing, unexpected or
mis-shaped keys (docs/detection-notes.md, section 3): a wrong prefix or width leaves the detector's
backbone at random init without an error. So the hand-off is checked tensor by tensor after
``init_weights()`` and before training. mmdet's ResNet uses torchvision's key names (``conv1``,
``bn1``, ``layerN.M.convK``, ``downsample.0``), and a C4 model keeps stage 4 in
``roi_head.shared_head.layer4``; both are checked.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.checkpoints import import_backbone, key_listing
from core.io import atomic_torch_save

SHARED_HEAD = "roi_head.shared_head."


class HandoffError(RuntimeError):
    """The detector's backbone does not hold the pretrained weights; the message lists the keys."""


def export_for_mmdet(
    ckpt: str | Path, out: str | Path, fmt: str = "auto"
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write the bare torchvision-layout backbone of ``ckpt`` (any layout the importer accepts) to
    ``out``, the plain tensor dict mmengine's ``Pretrained`` init loads under ``weights_only``;
    returns (path, weights)."""
    weights, _report = import_backbone(ckpt, fmt)
    return atomic_torch_save(weights, out), weights


def detector_key(model_keys: set[str], key: str) -> str | None:
    """Where backbone tensor ``key`` lives in the detector: ``backbone.<key>``, or the C4 shared
    head for stage 4; None when the detector has no such tensor."""
    for candidate in ("backbone." + key, SHARED_HEAD + key):
        if candidate in model_keys:
            return candidate
    return None


def check_handoff(
    model: nn.Module, weights: dict[str, torch.Tensor], source: str = "the pretrained file"
) -> int:
    """Raise HandoffError unless every ResNet tensor of ``model`` (its ``backbone.*`` and C4
    ``shared_head`` tensors) equals the same-named tensor of ``weights``; returns how many tensors
    were checked.

    BN ``num_batches_tracked`` counters are skipped (mmengine does not load them and they change no
    output). A detector whose stages 1-3 are frozen still must match: frozen random weights are the
    worst case.
    """
    state = model.state_dict()
    resnet_keys = [
        k
        for k in state
        if (k.startswith("backbone.") or k.startswith(SHARED_HEAD))
        and not k.endswith("num_batches_tracked")
    ]
    if not resnet_keys:
        raise HandoffError(
            "the detector has no 'backbone.' tensors: is this an mmdet two-stage detector?"
        )
    by_name = {k.removeprefix("backbone.").removeprefix(SHARED_HEAD): k for k in resnet_keys}
    not_in_file = [by_name[name] for name in by_name if name not in weights]
    wrong_shape = [
        f"{by_name[n]} {tuple(state[by_name[n]].shape)} vs {tuple(weights[n].shape)}"
        for n in by_name
        if n in weights and state[by_name[n]].shape != weights[n].shape
    ]
    different = [
        by_name[n]
        for n in by_name
        if n in weights
        and state[by_name[n]].shape == weights[n].shape
        and not torch.equal(
            state[by_name[n]].detach().cpu(), weights[n].to(state[by_name[n]].dtype)
        )
    ]
    if not_in_file or wrong_shape or different:
        parts = []
        if not_in_file:
            parts.append(f"detector tensors absent from the file {key_listing(not_in_file)}")
        if wrong_shape:
            parts.append(f"shape mismatches (detector vs file) {key_listing(wrong_shape)}")
        if different:
            parts.append(f"tensors not loaded from the file {key_listing(different)}")
        raise HandoffError(
            f"the detector's ResNet was not filled from {source}: "
            + "; ".join(parts)
            + ". Check the backbone's depth and base_channels against the checkpoint "
            "(python -m core.checkpoints inspect FILE)"
        )
    return len(by_name)
