"""The pretraining loop: views -> model -> loss -> optimiser, with logs, checkpoints, resume and
DDP."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel

from core import distributed as dist
from core import faults
from core.checkpoints import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from core.cli import git_commit
from core.config import to_dict
from core.cpu import cpu_model
from core.data import build_dataset
from core.data.base import decode_on
from core.data.transforms import to_float
from core.device import select_device
from core.io import atomic_torch_save
from core.logs import JsonlLogger, progress_bar
from core.memory_format import choose
from core.methods import METHODS
from core.model import PretrainModel
from core.numerics import NUMERICS, is_current
from core.seeding import rng_state, seed_everything, set_rng_state, worker_init_fn
from core.views import ViewMaker, gates_from, pair_strengths
from pretrain.config import PretrainConfig
from pretrain.data import EpochSampler, Images, ViewDataset, collate_rendered
from pretrain.losses.mast_and import owned_ops
from pretrain.optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger("pretrain")


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class ResumeError(RuntimeError):
    """The run folder cannot be resumed as configured."""


def loss_module(cfg: PretrainConfig):
    """The loss module of ``cfg.method`` in the method table (``core/methods.py``)."""
    return importlib.import_module(f"pretrain.losses.{METHODS[cfg.method].loss}")


def build_model(cfg: PretrainConfig, num_ops: int, ops: list[str] | None = None) -> PretrainModel:
    """``ops``: the K op names (needed for an AND assignment, whose rows are the non-base ops).
    A loss module with a ``heads(cfg, feature_dim, embed_dim, ops)`` function gets its prediction
    heads built after the rest of the network (so the other parts draw the same initial weights)."""
    owned = len(owned_ops(cfg, ops)) if ops is not None else None
    model = PretrainModel(
        cfg.model.arch,
        cfg.model.base_width,
        cfg.model.expander,
        num_ops=num_ops,
        masks=cfg.mask_kind,
        uncertainty=cfg.uses_uncertainty,
        uncertainty_hidden=cfg.model.uncertainty_hidden,
        mask_init_std=cfg.model.mask_init_std,
        seed=cfg.seed,
        num_owned=owned,
        ema_target=METHODS[cfg.method].ema_target,
    )
    make_heads = getattr(loss_module(cfg), "heads", None)
    if make_heads is not None:
        model.heads = make_heads(cfg, model.backbone.feature_dim, model.embed_dim, ops or [])
    return model


def build_loss(cfg: PretrainConfig, ops: list[str] | None = None) -> torch.nn.Module:
    """The loss of ``cfg.method``: ``build(cfg, ops)`` of its module in the method table
    (``core/methods.py``); ``ops``: the K op names (the AND loss needs them)."""
    return loss_module(cfg).build(cfg, ops)


def checkpoint_state(
    cfg: PretrainConfig,
    model: PretrainModel,
    optimizer,
    scaler,
    ops: list[str],
    epoch: int,
    step: int,
    world_size: int,
    machine: dict[str, Any],
) -> dict[str, Any]:
    masks = None
    if model.masks is not None:
        masks = (model.masks.logits if model.masks.learned else model.masks.fixed).detach().cpu()
    head = model.uncertainty_head
    return {
        "format": FORMAT,
        "backbone": {k: v.cpu() for k, v in model.backbone.state_dict().items()},
        "arch": cfg.model.arch,
        "base_width": cfg.model.base_width,
        "method": cfg.method,
        "expander": model.expander.state_dict(),
        "masks": masks,
        "mask_kind": cfg.mask_kind,
        "aug_names": ops,
        "uncertainty_head": head.state_dict() if head is not None else None,
        "heads": model.heads.state_dict() if model.heads is not None else None,
        "target": model.target.state_dict() if model.target is not None else None,
        "config": to_dict(cfg),
        "epoch": epoch,
        "step": step,
        "world_size": world_size,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "git_commit": git_commit(),
        "numerics": NUMERICS,
        "machine": machine,
    }


def restore(state: dict[str, Any], model: PretrainModel, optimizer, scaler) -> None:
    model.backbone.load_state_dict(state["backbone"])
    model.expander.load_state_dict(state["expander"])
    if model.masks is not None:
        target = model.masks.logits if model.masks.learned else model.masks.fixed
        target.data.copy_(state["masks"])
    if model.uncertainty_head is not None:
        model.uncertainty_head.load_state_dict(state["uncertainty_head"])
    if model.heads is not None:
        model.heads.load_state_dict(state["heads"])
    if model.target is not None:
        model.target.load_state_dict(state["target"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def _check_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
    if torch.isfinite(total):
        return
    bad = [
        f"{name}={value.item():.4g}"
        for name, value in terms.items()
        if value.ndim == 0 and not torch.isfinite(value)
    ]
    raise TrainingDiverged(
        f"loss is not finite at step {step} (terms: {', '.join(bad) or 'total'}); "
        "the last checkpoint is kept: lower optim.base_lr or check the data, then --resume"
    )


def _step_stats(
    terms: dict[str, torch.Tensor],
    strengths: torch.Tensor | None,
    ops: list[str],
    owned: list[str] | None = None,
) -> dict[str, Any]:
    """Scalars as they are; per-op terms as {op: value} (``owned``: the ops of an AND assignment's
    rows)."""
    stats: dict[str, Any] = {k: v.item() for k, v in terms.items() if v.ndim == 0}
    per_op = {
        "gate_rate": "gate_rate",
        "s_mean": "uncertainty",
        "weight_spread": "uncertainty_spread",
        "mask_density": "mask_density",
        "ess": "ess",
    }
    for key, name in per_op.items():
        if key in terms:
            stats[name] = dict(zip(ops, terms[key].tolist()))
    for key in ("assign_share", "attribution", "temper"):
        if key in terms:
            # the AND loss's terms come with its rows (the trainer passes them)
            rows = cast(list[str], owned) if key != "temper" else ops
            stats[key] = dict(zip(rows, terms[key].tolist()))
    if strengths is not None:
        stats["strength"] = dict(zip(ops, strengths.mean(0).tolist()))
    return stats


def newest_readable(folder: Path, but: Path | None = None) -> Path | None:
    """The readable ``epoch_<n>.pt`` of ``folder`` with the largest n (other than ``but``), or
    None."""
    kept = sorted(
        folder.glob("epoch_*.pt"), key=lambda p: int(p.stem[6:]) if p.stem[6:].isdigit() else -1
    )
    for path in reversed(kept):
        if path != but:
            try:
                load_checkpoint(path, map_location="cpu")
                return path
            except CheckpointError:
                continue
    return None


class Trainer:
    def __init__(self, cfg: PretrainConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)
        self.info = dist.init_distributed(
            use_cuda=cfg.device != "cpu" and torch.cuda.is_available()
        )
        self.device = select_device(cfg.device, self.info.local_rank)
        seed_everything(cfg.seed)
        world = self.info.world_size
        if cfg.train.batch_size % world:
            raise ValueError(
                f"train.batch_size={cfg.train.batch_size} must divide by the {world} processes"
            )
        # in this order: the random draws after seeding stay where they were
        self._setup_data(cfg)
        self._setup_model(cfg)
        self._setup_optimization(cfg)
        self.step = 0

    def _setup_data(self, cfg: PretrainConfig) -> None:
        """The view maker, the images, and the loader of this process's share of each batch."""
        world = self.info.world_size
        self.views = ViewMaker(cfg.augment, cfg.views, cfg.data.image_size)
        self.ops, self.pairs = self.views.ops, self.views.pairs()
        # the rows of an AND assignment
        self.owned = [self.ops[k] for k in owned_ops(cfg, self.ops)]
        images = build_dataset(cfg.data, part=cfg.data.part, progress=self.info.is_main)
        self.sampler = EpochSampler(
            len(images), cfg.train.batch_size // world, cfg.seed, self.info.rank, world
        )
        self.loader = torch.utils.data.DataLoader(
            ViewDataset(
                images,
                self.views,
                cfg.seed,
                render=cfg.views.render == "loader",
                encoded=cfg.data.decode == "device",
            ),
            batch_size=cfg.train.batch_size // world,
            sampler=self.sampler,
            # torch's stub: with __getitems__ the collate gets its result, not a list
            collate_fn=collate_rendered,  # type: ignore[arg-type]
            num_workers=cfg.data.num_workers,
            worker_init_fn=worker_init_fn,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
            drop_last=True,
        )

    def _setup_model(self, cfg: PretrainConfig) -> None:
        """The model on its device and memory format (SyncBN and DDP across processes)."""
        world = self.info.world_size
        self.model = build_model(cfg, len(self.ops), self.ops).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.memory = choose(
            self.device, cfg.model.arch, cfg.model.base_width, cfg.train.channels_last
        )
        if self.info.is_main:
            log.info("memory format: %s (%s)", self.memory.name, self.memory.reason)
        if self.memory.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # What a bit-exact resume needs besides the state: CPU float results depend on these.
        self.machine = {
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "memory_format": self.memory.name,
        }
        if self.cuda and world > 1 and cfg.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        net: torch.nn.Module = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.cuda else None
            )
            if world > 1
            else self.model
        )
        # compiled: the network only; the losses and the step's bookkeeping stay eager. Not on the
        # CPU: inductor lays convolutions out channels_last there, which reaches oneDNN's AVX2
        # kernel that corrupts memory at narrow widths (docs/reliability.md; it aborted a test)
        compiled = cfg.train.compile and self.cuda
        if cfg.train.compile and not self.cuda and self.info.is_main:
            log.info("train.compile: ignored on %s (CUDA only)", self.device)
        self.net: Callable[..., Any] = torch.compile(net) if compiled else net

    def _setup_optimization(self, cfg: PretrainConfig) -> None:
        """The loss, the optimizer (lr scaled by batch / 256), AMP and the step schedule."""
        self.loss = build_loss(cfg, self.ops)
        scale = cfg.train.batch_size / 256
        mask_lr = (
            cfg.optim.mask_lr if cfg.optim.mask_lr is not None else cfg.optim.base_lr
        ) * scale
        self.optimizer = build_optimizer(
            self.model,
            cfg.optim.name,
            cfg.optim.base_lr * scale,
            cfg.optim.weight_decay,
            mask_lr,
            cfg.optim.momentum,
            cfg.optim.eta,
        )
        self.amp_dtype = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
            if self.cuda
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.train.epochs * self.per_epoch
        self.warmup_steps = min(
            int(cfg.optim.warmup_epochs * self.per_epoch), self.total_steps // 2
        )

    # ------------------------------------------------------------------------------------------
    # state
    def save(self, path: Path) -> None:
        if self.info.is_main:
            state = checkpoint_state(
                self.cfg,
                self.model,
                self.optimizer,
                self.scaler,
                self.ops,
                self.step // self.per_epoch,
                self.step,
                self.info.world_size,
                self.machine,
            )
            save_checkpoint(state, path)

    def resume(self, path: Path | None = None) -> None:
        """Continue from ``path`` (default: OUT/last.pt)."""
        path = Path(path) if path is not None else self.out / "last.pt"
        if not path.exists():
            raise ResumeError(f"--resume: no checkpoint at {path}; start without --resume")
        try:
            state = load_checkpoint(path, map_location="cpu")
        except CheckpointError as exc:
            older = newest_readable(self.out, but=path)
            fix = (
                f"resume from the newest readable one with --resume-from {older}"
                if older
                else "no readable epoch_<n>.pt is there: start over with --force (the folder is "
                "moved aside)"
            )
            raise ResumeError(f"{exc}; {fix}") from None
        if state["world_size"] != self.info.world_size:
            raise ResumeError(
                f"{path} was written by {state['world_size']} process(es), this run has "
                f"{self.info.world_size}: resume with the same number of processes"
            )
        if state["method"] != self.cfg.method or state["aug_names"] != self.ops:
            raise ResumeError(
                f"{path} holds method {state['method']} with ops {state['aug_names']}, the config "
                f"asks for {self.cfg.method} with {self.ops}"
            )
        numerics = int(state.get("numerics", 1))
        if not is_current(numerics, to_dict(self.cfg)):
            raise ResumeError(
                f"{path} was computed with numerics version {numerics}, and this code computes "
                f"this config with version {NUMERICS} (core/numerics.py says what changed): start "
                "over with --force (the folder is moved aside), or finish the run at the commit "
                "that started it"
            )
        restore(state, self.model, self.optimizer, self.scaler)
        self.step = int(state["step"])
        before = state.get("machine") or {}
        changed = {
            k: (before[k], v) for k, v in self.machine.items() if k in before and before[k] != v
        }
        if changed and self.info.is_main:
            log.warning(
                "resuming with %s: the weights will match an uninterrupted run only to float "
                "rounding",
                ", ".join(f"{k} {new} (trained with {old})" for k, (old, new) in changed.items()),
            )
        log.info(
            "resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.per_epoch
        )

    # ------------------------------------------------------------------------------------------
    # steps
    def train_step(self, batch: Images, params: torch.Tensor) -> dict[str, Any]:
        if isinstance(batch, list):  # raw images of several sizes, or undecoded JPEGs among them
            batch = self.views.render(decode_on(self.device, batch), params)
        elif self.cfg.views.render == "device":  # raw images [B, 3, H, W]: render them here
            batch = self.views.render(batch.to(self.device, non_blocking=True), params)
        views = batch.to(self.device, non_blocking=True).transpose(0, 1)  # [V, B, 3, S, S]
        images = [to_float(v).contiguous(memory_format=self.memory.memory_format) for v in views]
        set_lr(self.optimizer, lr_factor(self.step, self.total_steps, self.warmup_steps))
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            # a list of V tensors [B, 3, S, S]; the parameters reach a method's prediction heads
            recorded = (
                params.to(self.device, non_blocking=True).float()
                if self.model.heads is not None
                else None
            )
            out = self.net(images, recorded)
        z = out["z"].float()
        strengths = None
        # a method's prediction heads: what they predicted, and every view's recorded parameters
        extra = {"predictions": out["heads"], "params": recorded} if "heads" in out else {}
        if "z_target" in out:  # a target network's embeddings of every view
            extra["targets"] = out["z_target"].float()
        if not self.cfg.uses_masks:  # one embedding: the loss compares the two views
            total, terms = self.loss(z[0], z[1], **extra)
        else:
            strengths = pair_strengths(params.float(), self.pairs, self.cfg.augment, self.ops)
            # copies to the device never wait for it (a blocking one would sync the stream); the
            # pairs stay on the CPU, where the losses read them without waiting on the device
            strengths = strengths.to(self.device, non_blocking=True)
            gates = gates_from(strengths, self.cfg.loss.gate)
            masks = out["masks"].float()
            if self.cfg.loss.combine == "and":
                total, terms = self.loss(z, self.pairs, gates, masks, strengths, **extra)
            else:
                log_var = out["log_var"].float() if "log_var" in out else None
                total, terms = self.loss(z, self.pairs, gates, masks, log_var)
        _check_finite(total, terms, self.step + 1)  # 1-based, as in the log
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.model.target is not None:
            momentum = loss_module(self.cfg).momentum(self.cfg, self.step, self.total_steps)
            self.model.update_target(momentum)
        self.step += 1
        stats = _step_stats(terms, strengths, self.ops, self.owned)
        stats.update(loss=total.item(), lr=self.optimizer.param_groups[0]["lr"])
        side_terms = [stats[k] for k in ("unc_fit", "mask_excess") if k in stats]
        if "assign" in stats:  # the assignment's objective has weight 1, not lam
            side_terms.append(stats["assign"] / self.cfg.loss.lam)
        # the part of the loss the embedding optimises (the head's fit, the masks' objective aside)
        if side_terms:
            stats["embedding_loss"] = stats["loss"] - self.cfg.loss.lam * sum(side_terms)
        return stats

    def snapshot_masks(self, epoch: int) -> None:
        if self.info.is_main and self.model.masks is not None:
            masks = self.model.masks().detach().cpu().half()
            atomic_torch_save(
                {"epoch": epoch, "ops": self.ops, "masks": masks},
                self.out / "masks" / f"epoch_{epoch:04d}.pt",
            )

    def end_epoch(self, logger: JsonlLogger) -> None:
        """Checkpoint (last.pt, and epoch_<n>.pt when asked), mask snapshot and an epoch line in the
        log."""
        finished = self.step // self.per_epoch
        self.save(self.out / "last.pt")
        self.snapshot_masks(finished)
        if self.cfg.train.keep_every and finished % self.cfg.train.keep_every == 0:
            self.save(self.out / f"epoch_{finished}.pt")
        logger.log(event="epoch_end", epoch=finished, step=self.step)

    def fit(self) -> dict[str, Any]:
        """Train from ``self.step`` to the end (or ``train.max_steps``); return the last step's
        stats."""
        cfg = self.cfg
        stop = min(self.total_steps, cfg.train.max_steps or self.total_steps)
        every = cfg.train.checkpoint_every_steps
        logger = JsonlLogger(self.out / "log.jsonl", enabled=self.info.is_main)
        bar = progress_bar(stop, f"pretrain {cfg.method}", self.info.rank, initial=self.step)
        self.model.train()
        last: dict[str, Any] = {}
        assert self.loader.batch_size is not None  # _setup_data gives it one
        while self.step < stop:
            epoch, offset = divmod(self.step, self.per_epoch)
            self.sampler.set_epoch(epoch, skip=offset * self.loader.batch_size)
            tick = time.perf_counter()
            for views, params in self.loader:
                last = self.train_step(views, params)
                now = time.perf_counter()
                last.update(
                    step=self.step,
                    epoch=epoch,
                    img_per_s=cfg.train.batch_size / max(now - tick, 1e-9),
                )
                tick = now
                bar.update(1)
                bar.set_postfix(
                    loss=f"{last['loss']:.3f}", img_s=f"{last['img_per_s']:.0f}", refresh=False
                )
                if self.step % cfg.train.log_every == 0 or self.step == stop:
                    logger.log(**last)
                faults.point("step")
                if self.step == stop:
                    break
                # epoch ends save anyway
                if every and self.step % every == 0 and self.step % self.per_epoch:
                    self.save(self.out / "last.pt")
            if self.step % self.per_epoch == 0:
                self.end_epoch(logger)
            else:  # stopped inside an epoch (train.max_steps)
                self.save(self.out / "last.pt")
        bar.close()
        logger.close()
        dist.barrier()
        return last
