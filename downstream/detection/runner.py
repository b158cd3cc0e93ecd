"""Train and evaluate one detection protocol with mmengine's Runner: protocol card + backbone ->
metrics.

The card (``downstream/detection/configs/<protocol>.py``) states the schedule, head, BN and data;
this module composes the full mmengine config (model from ``models.detector_config``, COCO data
sets, SGD with linear warm-up and steps), checks the backbone hand-off before the first step,
trains, and evaluates in the same process (mmengine's own checkpoints do not load under
``weights_only``; see docs/detection-notes.md).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

from core.data.base import require_path
from core.distributed import env_dist_info
from downstream.detection.handoff import check_handoff, export_for_mmdet
from downstream.detection.models import detector_config, shrink_fpn_heads

log = logging.getLogger("downstream.detection")
CONFIGS = Path(__file__).resolve().parent / "configs"


def load_card(protocol: str | Path, overrides: dict[str, Any] | None = None) -> ConfigDict:
    """A protocol card by id (``embedded-frcnn``) or path, with ``overrides`` merged in."""
    path = Path(protocol)
    if not path.suffix:
        path = CONFIGS / f"{protocol}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.py")))
        raise FileNotFoundError(f"no protocol card {protocol!r}; known protocols: {known}")
    card = Config.fromfile(str(path))
    if overrides:
        card.merge_from_dict(overrides)
    return ConfigDict(card.to_dict())


@HOOKS.register_module()
class HandoffCheckHook(Hook):
    """Before the first training step, fail unless the detector's ResNet holds the pretrained
    tensors."""

    priority = "VERY_HIGH"

    def __init__(self, weights_file: str):
        self.weights_file = weights_file

    def before_train(self, runner) -> None:
        weights = torch.load(self.weights_file, map_location="cpu", weights_only=True)
        model = getattr(runner.model, "module", runner.model)
        checked = check_handoff(model, weights, source=self.weights_file)
        runner.logger.info(f"hand-off check: {checked} ResNet tensors equal {self.weights_file}")


class DetectionDiverged(RuntimeError):
    """A training loss that is not finite: the run stops there (mmengine would go on to the end)."""

    def __init__(self, iteration: int, terms: dict[str, float]):
        self.iteration, self.terms = iteration, terms
        shown = ", ".join(f"{k}={v:.3g}" for k, v in terms.items())
        super().__init__(f"loss not finite at iteration {iteration} ({shown})")


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """After each training step, stop the run if a loss term is NaN or infinite."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        terms = {
            k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in (outputs or {}).items()
            if k.startswith("loss")
        }
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        if bad:
            raise DetectionDiverged(runner.iter + 1, bad)


@HOOKS.register_module()
class HeldBackboneHook(Hook):
    """With the backbone held (``backbone_lr_mult`` 0), stop autograd at it: its weights get no
    gradient, so backpropagation ends at the neck. lr 0 moved nothing, BN statistics still adapt in
    the forward pass, and the heads' gradients do not depend on the backbone's: the same numbers,
    without the backbone's backward pass. One process only (DDP fixes its gradient set when it wraps
    the model, before this hook)."""

    priority = "LOW"

    def before_train(self, runner) -> None:
        model = getattr(runner.model, "module", runner.model)
        held = [model.backbone]
        shared = getattr(getattr(model, "roi_head", None), "shared_head", None)
        if shared is not None:  # the C4 head's ResNet stage 4 is backbone too (see _backbone_lr)
            held.append(shared)
        count = 0
        for module in held:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                count += 1
        runner.logger.info(f"held backbone: {count} tensors take no gradient (lr x 0)")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainedFirstConstructor(DefaultOptimWrapperConstructor):
    """mmengine's constructor with the parameter groups that train (lr > 0) first.

    mmengine logs the lr of the first group only; with the backbone held at lr x 0 (the embedded
    cards) that read 0 all run long. SGD updates each group on its own, so the order changes no
    number."""

    def add_params(
        self, params: list[dict], module: torch.nn.Module, prefix: str = "", **kwargs: Any
    ) -> None:
        super().add_params(params, module, prefix=prefix, **kwargs)
        if not prefix:  # the outermost call, after the recursion has added every group
            params.sort(key=lambda group: group.get("lr", self.base_lr) == 0)


def coco_part(image_dir: str | Path, ann_file: str | Path) -> dict[str, Any]:
    """One COCO part: its images folder, annotation file and class names (in category-id order)."""
    categories = json.loads(Path(ann_file).read_text())["categories"]
    classes = tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
    return {"kind": "coco", "img": str(image_dir), "ann": str(ann_file), "classes": classes}


def voc_part(root: str | Path, image_sets: list[str]) -> dict[str, Any]:
    """One VOCdevkit part: ``image_sets`` like ``VOC2007/ImageSets/Main/test.txt`` under
    ``root``."""
    from mmdet.datasets import VOCDataset

    return {
        "kind": "voc",
        "root": str(root),
        "sets": list(image_sets),
        "classes": tuple(VOCDataset.METAINFO["classes"]),
    }


def factorshapes_parts(card: ConfigDict, root: str | None = None) -> dict[str, dict[str, Any]]:
    """The train and val parts of the card's FactorShapes det split (generated on first use)."""
    from core.data import default_data_root
    from core.data.factorshapes import coco_files, ensure_split

    spec = card.data
    parts = {}
    for part in ("train", "val"):
        folder = ensure_split(
            root or default_data_root(), spec.split, part, spec.get("n"), spec.image_size, 0
        )
        files = coco_files(folder)
        if spec.categories not in files:
            raise ValueError(
                f"no '{spec.categories}' categories for split {spec.split}; choose one of "
                f"{', '.join(files)}"
            )
        parts[part] = coco_part(folder / "images", files[spec.categories])
    return parts


def _require(path: Path, what: str, layout: str) -> Path:
    return require_path(path, what, f"pass --set data.root=PATH to a folder in the {layout}")


def data_parts(card: ConfigDict, factorshapes_root: str | None = None) -> dict[str, dict[str, Any]]:
    """The card's train and val parts: FactorShapes (generated), a COCO folder or a VOCdevkit
    folder."""
    spec = card.data
    if spec.type == "factorshapes":
        return factorshapes_parts(card, factorshapes_root)
    root = Path(spec.root)
    if spec.type == "coco":
        layout = "COCO layout (train2017/, val2017/, annotations/instances_*.json)"
        return {
            part: coco_part(
                _require(root / spec[part].img, f"COCO {part} images", layout),
                _require(root / spec[part].ann, f"COCO {part} annotations", layout),
            )
            for part in ("train", "val")
        }
    if spec.type == "voc":
        layout = (
            "VOCdevkit layout (VOC2007/, VOC2012/ with ImageSets/Main, Annotations, JPEGImages)"
        )
        for image_set in [*spec.train, *spec.val]:
            _require(root / image_set, "VOC image set", layout)
        return {"train": voc_part(root, spec.train), "val": voc_part(root, spec.val)}
    raise ValueError(f"unknown data.type '{spec.type}' in the card; use factorshapes, coco or voc")


def _dataset(part: dict[str, Any], pipeline: list, test_mode: bool) -> dict[str, Any]:
    if part.get("kind", "coco") == "coco":
        return dict(
            type="CocoDataset",
            data_root="",
            ann_file=part["ann"],
            data_prefix=dict(img=part["img"] + "/"),
            metainfo=dict(classes=part["classes"]),
            test_mode=test_mode,
            pipeline=pipeline,
            filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=1),
        )
    sets = [
        dict(
            type="VOCDataset",
            data_root=part["root"] + "/",
            ann_file=image_set,
            data_prefix=dict(sub_data_root=image_set.split("/")[0] + "/"),
            test_mode=test_mode,
            pipeline=pipeline,
            filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=1),
        )
        for image_set in part["sets"]
    ]
    # ignore_keys: VOC2007 and VOC2012 differ in metainfo's dataset_type, which is only a label.
    return (
        sets[0]
        if len(sets) == 1
        else dict(type="ConcatDataset", ignore_keys=["dataset_type"], datasets=sets)
    )


def _evaluator(card: ConfigDict, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if parts["val"].get("kind") == "voc":
        # MoCo's VOC report: COCO-style AP over IoU 0.50:0.95 with VOC2007's 11-point AP, plus AP50
        # and AP75.
        return dict(
            type="VOCMetric",
            metric="mAP",
            eval_mode="11points",
            iou_thrs=[round(0.5 + 0.05 * i, 2) for i in range(10)],
        )
    return dict(type="CocoMetric", ann_file=parts["val"]["ann"], metric=list(card.metrics))


def backbone_lr_mult(card: ConfigDict) -> float:
    """The backbone's lr as a fraction of the heads' (``backbone_lr_mult``, default 1)."""
    return float(card.get("backbone_lr_mult", 1.0))


def _backbone_lr(card: ConfigDict) -> dict[str, Any]:
    """``backbone_lr_mult`` of the card (default 1): the backbone's lr as a fraction of the heads'
    lr. The C4 head's ResNet stage 4 counts as backbone too, so every pretrained tensor moves at the
    same rate."""
    mult = backbone_lr_mult(card)
    if mult == 1.0:
        return {}
    return dict(
        custom_keys={"backbone": dict(lr_mult=mult), "roi_head.shared_head": dict(lr_mult=mult)}
    )


def _pipelines(card: ConfigDict) -> tuple[list[dict], list[dict]]:
    """The train and test pipelines: load, resize (random scale in training where the card lists
    ``train_scales``), the card's augmentations, pack."""
    masks = bool(card.masks)
    load = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=masks),
    ]
    resize = dict(type="Resize", scale=tuple(card.image_scale), keep_ratio=True)
    train_resize = (
        dict(
            type="RandomChoiceResize", scales=[tuple(s) for s in card.train_scales], keep_ratio=True
        )
        if card.get("train_scales")
        else resize
    )
    train_pipeline = load + [train_resize, *card.train_augment, dict(type="PackDetInputs")]
    test_pipeline = [
        load[0],
        resize,
        load[1],
        dict(
            type="PackDetInputs",
            meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
        ),
    ]
    return train_pipeline, test_pipeline


def _model(
    card: ConfigDict,
    parts: dict[str, dict[str, Any]],
    arch: str,
    base_width: int,
    pretrained: str | None,
) -> dict[str, Any]:
    model = detector_config(
        arch,
        base_width,
        len(parts["train"]["classes"]),
        card.head,
        bool(card.masks),
        pretrained,
        card.norm,
        card.frozen_stages,
        card.norm_eval,
    )
    if card.get("heads"):
        model = shrink_fpn_heads(model, **card.heads)
    return model


def _world_and_batch(card: ConfigDict) -> tuple[int, int]:
    """The number of processes and each one's batch (the card's ``batch_size`` is the total)."""
    world = env_dist_info().world_size  # before mmengine starts the process group
    if world > 1 and not torch.cuda.is_available():
        raise RuntimeError(
            f"{world} processes but no GPU: mmengine's pytorch launcher gives each process a CUDA "
            "device; run detection as one process on CPU (without torchrun)"
        )
    if card.batch_size % world:
        raise ValueError(
            f"batch_size {card.batch_size} (the total over processes) must divide by {world} "
            "processes"
        )
    return world, card.batch_size // world


def _dataloaders(
    parts: dict[str, dict[str, Any]],
    pipelines: tuple[list[dict], list[dict]],
    batch: int,
    workers: int,
) -> dict[str, Any]:
    train_pipeline, test_pipeline = pipelines
    loader = dict(num_workers=workers, persistent_workers=workers > 0)
    return dict(
        train_dataloader=dict(
            batch_size=batch,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            batch_sampler=dict(type="AspectRatioBatchSampler"),
            dataset=_dataset(parts["train"], train_pipeline, False),
            **loader,
        ),
        val_dataloader=dict(
            batch_size=batch,
            drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=_dataset(parts["val"], test_pipeline, True),
            **loader,
        ),
    )


def _schedule(card: ConfigDict) -> dict[str, Any]:
    """The loops, SGD and its warm-up and step schedule."""
    return dict(
        # val_begin past the end: the loop would otherwise evaluate after its last iteration,
        # and run() evaluates again to get the metrics back (mmengine's train() returns the
        # model only).
        train_cfg=dict(
            type="IterBasedTrainLoop",
            max_iters=card.max_iters,
            val_interval=card.max_iters + 1,
            val_begin=card.max_iters + 1,
        ),
        val_cfg=dict(type="ValLoop"),
        optim_wrapper=dict(
            type="OptimWrapper",
            optimizer=dict(
                type="SGD", lr=card.lr, momentum=card.momentum, weight_decay=card.weight_decay
            ),
            paramwise_cfg=_backbone_lr(card),
            constructor="TrainedFirstConstructor",
        ),
        param_scheduler=[
            dict(
                type="LinearLR",
                start_factor=0.001,
                by_epoch=False,
                begin=0,
                end=max(1, card.warmup_iters),
            ),
            dict(
                type="MultiStepLR",
                by_epoch=False,
                begin=0,
                end=card.max_iters,
                milestones=list(card.milestones),
                gamma=0.1,
            ),
        ],
    )


def _default_hooks(card: ConfigDict) -> dict[str, Any]:
    return dict(
        timer=dict(type="IterTimerHook"),
        logger=dict(type="LoggerHook", interval=20),
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=dict(
            type="CheckpointHook", by_epoch=False, interval=card.max_iters, max_keep_ckpts=1
        ),
        sampler_seed=dict(type="DistSamplerSeedHook"),
    )


def mmengine_config(
    card: ConfigDict,
    parts: dict[str, dict[str, Any]],
    arch: str,
    base_width: int,
    pretrained: str | None,
    work_dir: str | Path,
    seed: int,
    workers: int = 0,
) -> Config:
    """The complete mmengine config of one run."""
    pipelines = _pipelines(card)
    model = _model(card, parts, arch, base_width, pretrained)
    workers = card.get("num_workers", workers)
    world, batch = _world_and_batch(card)
    hooks = [dict(type="FiniteLossHook")]
    if backbone_lr_mult(card) == 0.0 and world == 1:
        hooks.append(dict(type="HeldBackboneHook"))
    if pretrained:
        hooks.append(dict(type="HandoffCheckHook", weights_file=pretrained))
    return Config(
        dict(
            default_scope="mmdet",
            model=model,
            work_dir=str(work_dir),
            custom_hooks=hooks,
            **_dataloaders(parts, pipelines, batch, workers),
            val_evaluator=_evaluator(card, parts),
            **_schedule(card),
            default_hooks=_default_hooks(card),
            log_processor=dict(type="LogProcessor", window_size=20, by_epoch=False),
            env_cfg=dict(
                cudnn_benchmark=False,
                mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                dist_cfg=dict(backend="nccl" if torch.cuda.is_available() else "gloo"),
            ),
            randomness=dict(seed=seed, deterministic=False),
            launcher="pytorch" if world > 1 else "none",
            log_level="INFO",
        )
    )


def run(
    card: ConfigDict,
    parts: dict[str, dict[str, Any]],
    ckpt: str | Path | None,
    arch: str,
    base_width: int,
    work_dir: str | Path,
    seed: int = 0,
) -> dict[str, float]:
    """Train the card's detector from ``ckpt``'s backbone (None: random init) and return the val
    metrics."""
    from mmengine.runner import Runner

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pretrained = (
        str(export_for_mmdet(ckpt, work_dir / "backbone.pth")[0]) if ckpt is not None else None
    )
    runner = Runner.from_cfg(
        mmengine_config(card, parts, arch, base_width, pretrained, work_dir, seed)
    )
    runner.train()
    return runner.val()
