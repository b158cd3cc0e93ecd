"""MMDetection model configs for the suite's backbones: Faster / Mask R-CNN with FPN or C4 heads,
for any ResNet depth and base width (the reduced-width CPU backbones included), channels wired
accordingly.

The head settings start from mmdet's shipped base models (``mmdet/.mim/configs/_base_/models``, read
by absolute path, never downloaded); what changes a number is set here explicitly: ResNet style
``pytorch`` (torchvision layout), ImageNet RGB normalisation (the suite's ``to_float``), BN type,
frozen stages, ``norm_eval`` and the pretrained file.
"""

from __future__ import annotations

import os
from typing import Literal

from mmdet.models.backbones import ResNet
from mmdet.models.layers import ResLayer as StageLayer
from mmdet.models.roi_heads.shared_heads import ResLayer as SharedHead
from mmdet.registry import MODELS
from mmengine.config import Config, ConfigDict

from downstream.detection.roi_align import FastRoIAlign

Head = Literal["fpn", "c4"]
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
#: The suite's backbones see ImageNet-normalised RGB (core.data.transforms.to_float), in 0-255 units
#: here.
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@MODELS.register_module()
class ScaledSharedHead(SharedHead):
    """mmdet's C4 shared head (ResNet stage 4, keys ``layer4.*``) for any base width; mmdet's own
    hard-codes 64."""

    def __init__(
        self,
        depth: int,
        base_channels: int = 64,
        stage: int = 3,
        stride: int = 2,
        dilation: int = 1,
        style: str = "pytorch",
        norm_cfg: dict | None = None,
        norm_eval: bool = True,
        with_cp: bool = False,
        dcn: dict | None = None,
        init_cfg: dict | None = None,
    ):
        norm_cfg = norm_cfg or dict(type="BN", requires_grad=True)
        super().__init__(
            depth,
            stage=stage,
            stride=stride,
            dilation=dilation,
            style=style,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            with_cp=with_cp,
            dcn=dcn,
            init_cfg=init_cfg,
        )
        block, stage_blocks = ResNet.arch_settings[depth]
        layer = StageLayer(
            block,
            base_channels * 2 ** (stage - 1) * block.expansion,
            base_channels * 2**stage,
            stage_blocks[stage],
            stride=stride,
            dilation=dilation,
            style=style,
            with_cp=with_cp,
            norm_cfg=norm_cfg,
            dcn=dcn,
        )
        # replaces the width-64 stage built by the parent
        self.add_module(f"layer{stage + 1}", layer)


def _base_model(name: str) -> ConfigDict:
    import mmdet

    path = os.path.join(
        os.path.dirname(mmdet.__file__), ".mim", "configs", "_base_", "models", name
    )
    # a ConfigDict: mmdet's detectors read train_cfg.rpn etc. as attributes
    return Config.fromfile(path).model


def _c4_shared_head(
    depth: int, base_width: int, norm_cfg: dict, norm_eval: bool, init: dict | None
) -> dict:
    """The C4 RoI head's ResNet stage 4 at ``base_width``, with the backbone's BN and init."""
    return dict(
        type="ScaledSharedHead",
        depth=depth,
        base_channels=base_width,
        stage=3,
        stride=2,
        style="pytorch",
        norm_cfg=norm_cfg,
        norm_eval=norm_eval,
        init_cfg=init,
    )


def detector_config(
    arch: str,
    base_width: int,
    num_classes: int,
    head: Head = "fpn",
    masks: bool = False,
    pretrained: str | None = None,
    norm: str = "BN",
    frozen_stages: int = -1,
    norm_eval: bool = False,
) -> ConfigDict:
    """The ``model`` dict of a Faster (``masks=False``) or Mask R-CNN on ResNet ``arch`` at
    ``base_width``.

    ``pretrained``: the bare backbone file of ``handoff.export_for_mmdet`` (None: random init, the
    floor, with its residual branches on as ``core.checkpoints.FLOOR_INIT`` says).
    ``frozen_stages=-1`` and ``norm_eval=False`` train every layer and its BN, as MoCo's transfer
    protocol does.
    """
    if arch not in DEPTHS:
        raise ValueError(f"unknown architecture '{arch}'; detection supports {', '.join(DEPTHS)}")
    depth = DEPTHS[arch]
    expansion = ResNet.arch_settings[depth][0].expansion
    widths = [base_width * 2**i * expansion for i in range(4)]
    norm_cfg = dict(type=norm, requires_grad=True)
    init = dict(type="Pretrained", checkpoint=pretrained) if pretrained else None
    kind = (
        ("mask" if masks else "faster")
        + "-rcnn_r50"
        + ("_fpn.py" if head == "fpn" else "-caffe-c4.py")
    )
    model = _base_model(kind)
    model["data_preprocessor"].update(mean=PIXEL_MEAN, std=PIXEL_STD, bgr_to_rgb=True)
    model["backbone"].update(
        depth=depth,
        base_channels=base_width,
        style="pytorch",
        norm_cfg=norm_cfg,
        norm_eval=norm_eval,
        frozen_stages=frozen_stages,
        init_cfg=init,
        # mmdet zeroes each block's last BN by default: a random floor would then be near constant
        zero_init_residual=pretrained is not None,
    )
    roi = model["roi_head"]
    if head == "fpn":
        model["neck"]["in_channels"] = widths
    else:
        model["rpn_head"].update(in_channels=widths[2], feat_channels=widths[2])
        roi["bbox_roi_extractor"]["out_channels"] = widths[2]
        roi["shared_head"] = _c4_shared_head(depth, base_width, norm_cfg, norm_eval, init)
        roi["bbox_head"]["in_channels"] = widths[3]
        if masks:
            roi["mask_head"]["in_channels"] = widths[3]
    roi["bbox_head"]["num_classes"] = num_classes
    if masks:
        roi["mask_head"]["num_classes"] = num_classes
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        layer = (roi.get(key) or {}).get("roi_layer", {})
        if layer.get("type") == "RoIAlign":
            # torchvision's kernels, on CPU compiled by numba: the same samples summed in the same
            # order as mmcv's (bitwise equal outputs and gradients on CPU,
            # tests/downstream/test_roi_align.py), where mmcv's backward, then torchvision's, were
            # a quarter to 40% of a CPU training step
            layer["type"] = FastRoIAlign.__name__
    return model


def shrink_fpn_heads(
    model: ConfigDict,
    neck_channels: int,
    fc_channels: int,
    rpn_train_proposals: int,
    rpn_test_proposals: int,
    roi_samples: int,
    mask_convs: int = 4,
) -> ConfigDict:
    """Narrow an FPN detector's neck and heads and cut its proposals, for CPU-scale protocols:
    mmdet's defaults (256-channel FPN, 1024-wide box head, 1,000 test proposals per image) make one
    CPU evaluation of 500 128-px images take many minutes, almost all of it in the RoI head.
    ``mask_convs``: the mask head's 3x3 convolutions (mmdet: 4), which cost about as much as the
    rest of a CPU training step."""
    if "neck" not in model:
        raise ValueError("shrink_fpn_heads applies to FPN detectors only")
    model["neck"]["out_channels"] = neck_channels
    model["rpn_head"].update(in_channels=neck_channels, feat_channels=neck_channels)
    roi = model["roi_head"]
    roi["bbox_roi_extractor"]["out_channels"] = neck_channels
    roi["bbox_head"].update(in_channels=neck_channels, fc_out_channels=fc_channels)
    if "mask_head" in roi:
        roi["mask_roi_extractor"]["out_channels"] = neck_channels
        roi["mask_head"].update(
            in_channels=neck_channels, conv_out_channels=neck_channels, num_convs=mask_convs
        )
    model["train_cfg"]["rpn_proposal"].update(
        nms_pre=2 * rpn_train_proposals, max_per_img=rpn_train_proposals
    )
    model["train_cfg"]["rcnn"]["sampler"]["num"] = roi_samples
    model["test_cfg"]["rpn"].update(nms_pre=2 * rpn_test_proposals, max_per_img=rpn_test_proposals)
    return model
