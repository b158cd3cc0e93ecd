"""The classification stage: every (backbone, task, protocol) of a config becomes one record.

A record that already exists (same checkpoint hash or random-init seed, data set, task, protocol,
seed and protocol settings) is not computed again, so re-running adds nothing; frozen features come
from the feature cache, so a new protocol on an evaluated backbone costs no extraction.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.backbones import build_backbone
from core.checkpoints import (
    FORMAT,
    Backbone,
    load_checkpoint,
    pixel_backbone,
    random_backbone,
    save_checkpoint,
    weights_hash,
)
from core.config import to_dict
from core.data.transforms import resize_center_crop
from core.device import select_device
from core.io import atomic_write_text
from core.logs import JsonlLogger
from core.records import (
    append_record,
    checkpoint_ref,
    ckpt_field,
    make_record,
    read_records,
)
from downstream.classification.config import ClassificationConfig
from downstream.classification.features import FeatureCache
from downstream.classification.knn import knn_accuracy
from downstream.classification.linear import linear_probe
from downstream.classification.tasks import (
    Task,
    balanced_subset,
    build_part,
    data_identity,
    resolve_tasks,
    split_indices,
)
from downstream.classification.train import (
    LabelView,
    MultiHead,
    evaluate,
    fit,
    multi_task_loss,
    train_transform,
)

log = logging.getLogger("downstream.classification")
STAGE = "classification"
#: The protocols that read frozen features (the raw-pixel reference has nothing else to offer).
FROZEN_PROTOCOLS = ("linear-lbfgs", "knn")
KEY_FIELDS = ("method", "arch", "dataset", "task", "protocol", "seed", "metric")


def record_key(record: dict[str, Any]) -> str:
    """What makes two records the same measurement: the fields above, the checkpoint's hash, the
    config."""
    key = {name: record.get(name) for name in KEY_FIELDS}
    key.update(ckpt=ckpt_field(record.get("pretrain_ckpt")), config=record.get("config"))
    return json.dumps(key, sort_keys=True, default=str)


def _recorded_at(table: pd.DataFrame, ckpt: Path, task: Task, protocols: list[str]) -> bool:
    """Whether ``table`` (the records read once) holds every protocol of the ceiling network at
    ``ckpt`` on ``task`` (``supervised`` and ``protocols``)."""
    if table.empty:
        return False
    mine = table[
        (table["method"] == "supervised")
        & (table["pretrain_ckpt"].map(lambda c: ckpt_field(c, "path")) == str(ckpt))
        & (table["dataset"] == task.dataset_name)
        & (table["task"] == task.label)
    ]
    return {"supervised", *protocols} <= set(mine["protocol"])


class Evaluator:
    """Runs the protocols of ``cfg`` on backbones and appends records to ``records``."""

    def __init__(
        self, cfg: ClassificationConfig, records: str | Path, log_dir: str | Path | None = None
    ):
        self.cfg, self.records = cfg, Path(records)
        self.device = select_device(cfg.device)
        self.cache = FeatureCache(cfg.cache)
        self.tasks = resolve_tasks(cfg.data, cfg.tasks)
        self.done = self._existing_keys()
        self.written = 0
        self._memo: dict[str, tuple[dict, dict]] = {}
        self.events = JsonlLogger(Path(log_dir) / "log.jsonl") if log_dir else None

    def _existing_keys(self) -> set[str]:
        if not self.records.is_file():
            return set()
        frame = read_records(self.records)
        return {record_key(row) for row in frame.to_dict("records")}

    def _event(self, **fields: Any) -> None:
        if self.events is not None:
            self.events.log(**fields)

    # -----------------------------------------------------------------------------------------
    # records
    def _base(
        self, bb: Backbone, task: Task, protocol: str, config: dict[str, Any], ckpt_ref
    ) -> dict[str, Any]:
        seed = bb.pretrain_seed if bb.pretrain_seed is not None else self.cfg.seed
        if bb.init is not None:  # a floor's init is part of what was measured
            config = {**config, "init": bb.init}
        return dict(
            stage=STAGE,
            method=bb.method,
            arch=bb.arch_label,
            pretrain_ckpt=ckpt_ref,
            pretrain_epochs=bb.pretrain_epochs,
            dataset=task.dataset_name,
            task=task.label,
            protocol=protocol,
            seed=seed,
            metric="top1",
            config=config,
        )

    def _pending(self, base: dict[str, Any]) -> bool:
        return record_key(base) not in self.done

    def _write(
        self, base: dict[str, Any], value: float, n_train: int, n_test: int, **extra: Any
    ) -> None:
        record = make_record(**base, value=value, n_train=n_train, n_test=n_test, **extra)
        append_record(self.records, record)
        self.done.add(record_key(record))
        self.written += 1
        self._event(
            event="record",
            method=base["method"],
            task=base["task"],
            protocol=base["protocol"],
            value=value,
        )
        log.info(
            "%s %s %s/%s %s: %.2f",
            base["method"],
            base["arch"],
            base["dataset"],
            base["task"],
            base["protocol"],
            value,
        )

    # ----------------------------------------------------------------------------------------
    # features
    def _eval_transform(self):
        return resize_center_crop(self.cfg.data.image_size, self.cfg.resize_ratio)

    def _features(
        self, bb: Backbone, bb_hash: str, task: Task
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train", "val", "test"}`` -> (features, labels of the task)."""
        memo_key = json.dumps([bb_hash, data_identity(task.data)], sort_keys=True)
        if memo_key not in self._memo:  # one backbone's features stay in memory while its tasks run
            self._memo = {memo_key: self._stored_features(bb, bb_hash, task)}
        parts, stored = self._memo[memo_key]
        result = {}
        for name, (stored_part, idx) in parts.items():
            features, labels = stored[stored_part]
            y = labels[task.label]
            result[name] = (features, y) if idx is None else (features[idx], y[idx])
        return result

    def _stored_features(self, bb: Backbone, bb_hash: str, task: Task) -> tuple[dict, dict]:
        n_train = len(build_part(task.data, "train"))
        parts = split_indices(task.data, n_train, self.cfg.val_fraction)
        stored = {}
        for stored_part in sorted({p for p, _ in parts.values()}):
            key = {
                "data": data_identity(task.data),
                "part": stored_part,
                "transform": {
                    "size": self.cfg.data.image_size,
                    "resize_ratio": self.cfg.resize_ratio,
                },
            }
            desc = f"{task.dataset_name}/{stored_part}"
            stored[stored_part] = self.cache.get_or_extract(
                bb.model,
                bb_hash,
                key,
                lambda p=stored_part: build_part(task.data, p, self._eval_transform()),
                self.cfg.batch_size,
                self.device,
                desc,
                self.cfg.data.num_workers,
            )
            self._event(
                event="features",
                backbone=bb_hash[:16],
                part=desc,
                hits=self.cache.hits,
                misses=self.cache.misses,
            )
        return parts, stored

    # ---------------------------------------------------------------------------------------
    # protocols
    def evaluate_backbone(self, bb: Backbone, protocols: Sequence[str] | None = None) -> int:
        """Every pending record of ``bb`` under ``protocols`` (default: the config's); returns how
        many were written."""
        before = self.written
        ckpt_ref = checkpoint_ref(bb.ckpt) if bb.ckpt is not None else None
        bb_hash = weights_hash(bb.model)
        for task in self.tasks:
            for protocol in self.cfg.protocols if protocols is None else protocols:
                getattr(self, "_" + protocol.replace("-", "_"))(bb, bb_hash, task, ckpt_ref)
        return self.written - before

    def _linear_lbfgs(self, bb, bb_hash, task, ckpt_ref) -> None:
        cfg = self.cfg.lbfgs
        # the metric joins the config only when it is not top-1: older records keep their keys
        scored = {"metric": cfg.metric} if cfg.metric != "top1" else {}
        base = self._base(
            bb,
            task,
            "linear-lbfgs",
            {"l2_grid": cfg.l2_grid, "max_iter": cfg.max_iter, **scored, **self._view_config()},
            ckpt_ref,
        )
        base["metric"] = cfg.metric
        if not self._pending(base):
            return
        parts = self._features(bb, bb_hash, task)
        result = linear_probe(
            parts["train"],
            parts["val"],
            parts["test"],
            task.classes,
            tuple(cfg.l2_grid),
            cfg.max_iter,
            metric=cfg.metric,
        )
        self._write(
            base,
            100 * result.accuracy,
            len(parts["train"][0]) + len(parts["val"][0]),
            len(parts["test"][0]),
            detail={
                "l2": result.l2,
                f"val_{cfg.metric}": {str(k): 100 * v for k, v in result.val_accuracy.items()},
            },
        )

    def _knn(self, bb, bb_hash, task, ckpt_ref) -> None:
        cfg = self.cfg.knn
        base = self._base(
            bb,
            task,
            "knn",
            {"k": cfg.k, "temperature": cfg.temperature, **self._view_config()},
            ckpt_ref,
        )
        if not self._pending(base):
            return
        parts = self._features(bb, bb_hash, task)
        train = (
            torch.cat([parts["train"][0], parts["val"][0]]),
            torch.cat([parts["train"][1], parts["val"][1]]),
        )
        value = 100 * knn_accuracy(train, parts["test"], task.classes, cfg.k, cfg.temperature)
        self._write(base, value, len(train[0]), len(parts["test"][0]))

    def _view_config(self) -> dict[str, Any]:
        """Image settings a record depends on (FactorShapes' object scale only when not 1, as in the
        older records made before it existed)."""
        scale = self.cfg.data.object_scale
        return {
            "image_size": self.cfg.data.image_size,
            "resize_ratio": self.cfg.resize_ratio,
            **({"object_scale": scale} if scale != 1.0 else {}),
        }

    def _image_parts(self, task: Task) -> tuple[Any, np.ndarray, Any]:
        """The stored train part, the indices of train (validation held out), and the test part."""
        train = build_part(task.data, "train")
        parts = split_indices(task.data, len(train), self.cfg.val_fraction)
        test_part = parts["test"][0]
        train_idx = parts["train"][1] if parts["train"][1] is not None else np.arange(len(train))
        return train, train_idx, build_part(task.data, test_part, self._eval_transform())

    def _linear_sgd(self, bb, bb_hash, task, ckpt_ref) -> None:
        cfg = self.cfg.linear_sgd
        config = {**to_dict(cfg), **self._view_config(), "eval_seed": self.cfg.seed}
        base = self._base(bb, task, "linear-sgd", config, ckpt_ref)
        if not self._pending(base):
            return
        train, train_idx, test = self._image_parts(task)
        torch.manual_seed(self.cfg.seed)
        head = nn.Linear(bb.model.feature_dim, task.classes)
        backbone = copy.deepcopy(bb.model)
        data = LabelView(train, task.label, train_idx, self._train_transform(cfg))
        fit(
            backbone,
            head,
            data,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            groups=[(list(head.parameters()), cfg.lr)],
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            train_backbone=False,
            device=self.device,
            seed=self.cfg.seed,
            num_workers=self.cfg.data.num_workers,
            desc=f"linear-sgd {task.label}",
        )
        value = 100 * evaluate(
            backbone, head, LabelView(test, task.label), self.cfg.batch_size, self.device
        )
        self._write(base, value, len(data), len(test))

    def _finetune(self, bb, bb_hash, task, ckpt_ref) -> None:
        cfg = self.cfg.finetune
        train, train_idx, test = self._image_parts(task)
        labels = train.targets(task.label)[train_idx]
        for fraction, backbone_lr, head_lr in zip(cfg.fractions, cfg.backbone_lr, cfg.head_lr):
            subset = train_idx[balanced_subset(labels, fraction, self.cfg.seed)]
            subset_hash = _array_hash(subset)
            config = {
                "fraction": fraction,
                "backbone_lr": backbone_lr,
                "head_lr": head_lr,
                "epochs": cfg.epochs,
                "batch_size": cfg.batch_size,
                "weight_decay": cfg.weight_decay,
                "momentum": cfg.momentum,
                "crop_scale": cfg.crop_scale and list(cfg.crop_scale),
                "flip": cfg.flip,
                **self._view_config(),
                "eval_seed": self.cfg.seed,
                "subset_sha256": subset_hash,
            }
            base = self._base(bb, task, f"finetune-{_percent(fraction)}", config, ckpt_ref)
            if not self._pending(base):
                continue
            self._save_subset(task, fraction, subset, subset_hash)
            torch.manual_seed(self.cfg.seed)
            backbone, head = copy.deepcopy(bb.model), nn.Linear(bb.model.feature_dim, task.classes)
            data = LabelView(train, task.label, subset, self._train_transform(cfg))
            fit(
                backbone,
                head,
                data,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                groups=[
                    (list(backbone.parameters()), backbone_lr),
                    (list(head.parameters()), head_lr),
                ],
                weight_decay=cfg.weight_decay,
                momentum=cfg.momentum,
                device=self.device,
                seed=self.cfg.seed,
                num_workers=self.cfg.data.num_workers,
                desc=f"finetune {_percent(fraction)} {task.label}",
            )
            value = 100 * evaluate(
                backbone, head, LabelView(test, task.label), self.cfg.batch_size, self.device
            )
            self._write(base, value, len(subset), len(test))

    def _train_transform(self, cfg) -> Callable:
        return train_transform(
            self.cfg.data.image_size, cfg.crop_scale, cfg.flip, self.cfg.resize_ratio
        )

    def _save_subset(self, task: Task, fraction: float, subset: np.ndarray, digest: str) -> None:
        """Keep the exact subset beside the feature cache (a record names it by its hash)."""
        path = (
            Path(self.cfg.cache).parent
            / "subsets"
            / f"{task.dataset_name.replace('/', '_')}_{task.label}_"
            f"{_percent(fraction)}_s{self.cfg.seed}_{digest[:12]}.json"
        )
        if not path.exists():
            atomic_write_text(
                path, json.dumps({"indices": subset.tolist(), "sha256": digest}) + "\n"
            )

    # ------------------------------------------------------------------------------------ floor,
    # ceiling
    def pixels(self) -> int:
        """The raw-pixel reference under the config's frozen-feature protocols (it has no weights
        to train): logistic regression and kNN on the images themselves."""
        frozen = [p for p in self.cfg.protocols if p in FROZEN_PROTOCOLS]
        return self.evaluate_backbone(pixel_backbone(), frozen)

    def floor(self, arch: str, base_width: int) -> int:
        return sum(
            self.evaluate_backbone(random_backbone(arch, base_width, seed))
            for seed in self.cfg.floor_seeds
        )

    def ceiling(self, arch: str, base_width: int, out: str | Path) -> int:
        """Networks of ``arch`` trained from scratch on the tasks' labels (no augmentation: crops,
        flips and colour changes would corrupt position, chirality and colour labels): by default
        one per image part with a linear head per task (``ceiling.joint``), else one per task.
        Each task is scored by its own head (protocol ``supervised``) and by the frozen-feature
        protocols on the network's features. Computed once: checkpoints and records are reused."""
        cfg, before = self.cfg.ceiling, self.written
        recorded = read_records(self.records) if self.records.is_file() else pd.DataFrame()
        settings = to_dict(cfg)
        if not cfg.joint:  # absent for the per-label networks, as in records made before the key
            del settings["joint"]
        for tasks in self._ceiling_groups():
            config = {
                **settings,
                "optimizer": "adamw",
                "augment": None,
                **self._view_config(),
                "eval_seed": self.cfg.seed,
                **({"tasks": [t.label for t in tasks]} if cfg.joint else {}),
            }
            torch.manual_seed(self.cfg.seed)
            bb = Backbone(
                build_backbone(arch, base_width),
                "supervised",
                arch,
                base_width,
                None,
                cfg.epochs,
                self.cfg.seed,
            )
            first = tasks[0]
            tag = hashlib.sha256(
                json.dumps([data_identity(first.data), config], sort_keys=True).encode()
            ).hexdigest()
            # The folder name carries a hash of data and settings: a changed ceiling never reuses a
            # stale network.
            name = "joint" if cfg.joint else first.label
            run = (
                Path(out)
                / f"{first.dataset_name.replace('/', '_')}_{bb.arch_label}_{name}_{tag[:10]}"
            )
            ckpt = run / "last.pt"
            if not ckpt.is_file() and all(
                _recorded_at(recorded, ckpt, task, self.cfg.protocols) for task in tasks
            ):
                # records of this very network (same folder: same data and settings) are there;
                # run folders are not committed, so a fresh clone would retrain it for nothing
                log.info("supervised ceiling %s: recorded, checkpoint not kept: skipped", name)
                continue
            if not ckpt.is_file():
                self._train_ceiling(bb, tasks, ckpt, config)
            stored = None
            for task in tasks:
                base = self._base(bb, task, "supervised", config, checkpoint_ref(ckpt))
                if self._pending(base):
                    stored = stored or load_checkpoint(ckpt)
                    # per task (checkpoints before 2026-12-06: one value)
                    top1 = stored["test_top1"]
                    value = top1[task.label] if isinstance(top1, dict) else top1
                    self._write(base, value, stored["n_train"], stored["n_test"])
            bb.ckpt, bb.model = ckpt, _load_ceiling(ckpt, arch, base_width)
            saved, self.tasks = self.tasks, tasks
            try:
                self.evaluate_backbone(bb)
            finally:
                self.tasks = saved
        return self.written - before

    def _ceiling_groups(self) -> list[list[Task]]:
        """The tasks each ceiling network learns: those on the same images together (joint), or
        one each."""
        if not self.cfg.ceiling.joint:
            return [[task] for task in self.tasks]
        groups: dict[str, list[Task]] = {}
        for task in self.tasks:
            groups.setdefault(json.dumps(data_identity(task.data), sort_keys=True), []).append(task)
        return list(groups.values())

    def _train_ceiling(self, bb: Backbone, tasks: list[Task], ckpt: Path, config: dict) -> None:
        cfg = self.cfg.ceiling
        train, train_idx, test = self._image_parts(tasks[0])  # the same images for every task
        labels = [task.label for task in tasks]
        torch.manual_seed(self.cfg.seed)
        # one head per task (a per-label network: one head, trained on its plain cross-entropy)
        head = MultiHead(bb.model.feature_dim, [task.classes for task in tasks])
        data = LabelView(train, labels, train_idx, self._eval_transform())
        fit(
            bb.model,
            head,
            data,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            groups=[(list(bb.model.parameters()) + list(head.parameters()), cfg.lr)],
            optimizer="adamw",
            weight_decay=cfg.weight_decay,
            device=self.device,
            seed=self.cfg.seed,
            num_workers=self.cfg.data.num_workers,
            desc=f"ceiling {'+'.join(labels)}",
            criterion=multi_task_loss,
        )
        top1 = {
            label: 100
            * evaluate(bb.model, h, LabelView(test, label), self.cfg.batch_size, self.device)
            for label, h in zip(labels, head.heads)
        }
        bb.model.cpu()
        save_checkpoint(
            {
                "format": FORMAT,
                "backbone": bb.model.state_dict(),
                "arch": bb.arch,
                "base_width": bb.base_width,
                "method": "supervised",
                "epoch": cfg.epochs,
                "config": {
                    "seed": self.cfg.seed,
                    "task": [f"{t.dataset_name}/{t.label}" for t in tasks],
                    **config,
                },
                "head": head.cpu().state_dict(),
                "test_top1": top1,
                "n_train": len(data),
                "n_test": len(test),
            },
            ckpt,
        )


def _load_ceiling(path: Path, arch: str, base_width: int) -> nn.Module:
    model = build_backbone(arch, base_width)
    model.load_state_dict(load_checkpoint(path)["backbone"])
    return model.eval()


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def _array_hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()
