"""MAST / VICReg pretraining.

  python -m pretrain --config FILE --out DIR [--resume | --auto-resume | --force] [--set key=value
  ...]
      train; DIR gets config.yaml (resolved), run.json, log.jsonl (one line per logged step),
      last.pt (replaced atomically every epoch), masks/epoch_<n>.pt, and epoch_<n>.pt when
      train.keep_every asks. One process per DIR: a second one stops at once and names the first
      (DIR/.lock).
      --resume continues from DIR/last.pt (with DIR/config.yaml when --config is not given);
      --resume-from FILE continues from another checkpoint of DIR (an epoch_<n>.pt);
      --auto-resume does so only when DIR/last.pt exists (a finished run is left as it is);
      --force starts over on a DIR that holds a run, after moving that run to DIR/../stale/ (never
      deleted). Without any of them, a DIR holding a checkpoint is an error.
  python -m pretrain export CKPT OUT.pth
      write the bare backbone state_dict that torchvision.models.resnetXX() loads (fc aside).

Several GPUs or processes: torchrun --nproc_per_node N -m pretrain --config FILE --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.checkpoints import CheckpointError, load_checkpoint
from core.checkpoints.cli import main as checkpoints_main
from core.cli import add_common_args, config_from_args, note_run, prepare_out_dir
from core.config import ConfigError
from core.data.base import DataError
from core.logs import setup_logging
from core.runlock import FolderInUse, RunLock, move_aside
from pretrain.config import PretrainConfig

log = logging.getLogger("pretrain")


class RunExists(RuntimeError):
    """The output folder holds a run and the command line does not say what to do with it."""


def check_fresh_start(out: Path, force: bool) -> None:
    """Before training from scratch in ``out``: refuse, or with ``force`` move aside, a run that is
    there."""
    checkpoints = [p for p in (out / "last.pt", *sorted(out.glob("epoch_*.pt"))) if p.is_file()]
    if not checkpoints:
        # an attempt killed before its first checkpoint: keep its files
        if (out / "log.jsonl").is_file():
            log.info(
                "an earlier attempt without a checkpoint is in %s: moved its files to %s",
                out,
                move_aside(out),
            )
        return
    if force:
        log.warning("--force: moved the run that was in %s to %s", out, move_aside(out))
        return
    again = "start over with --force (make: FORCE=1), which moves it to stale/ beside the folder"
    try:
        state = load_checkpoint(checkpoints[0])
    except CheckpointError as exc:
        raise RunExists(
            f"{out} holds a run whose {checkpoints[0].name} is unreadable ({exc}): continue it "
            f"with --resume-from an epoch_<n>.pt, or {again}"
        ) from None
    epoch, epochs = state.get("epoch"), state.get("config", {}).get("train", {}).get("epochs")
    where = f"{checkpoints[0].name} at step {state.get('step')}, epoch {epoch} of {epochs}"
    if epoch is not None and epochs is not None and epoch >= epochs:
        raise RunExists(f"{out} holds a finished run ({where}): {again}, or choose another --out")
    raise RunExists(
        f"{out} holds an unfinished run ({where}): continue it with --resume (or --auto-resume), "
        f"or {again}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser, PretrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--resume-from",
        type=Path,
        metavar="FILE",
        help="continue from FILE (e.g. OUT/epoch_4.pt when last.pt is unreadable)",
    )
    parser.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from OUT/last.pt when it exists, else start (a finished run does nothing)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start over: move the run in OUT (if any) to stale/ beside OUT, then train",
    )
    return parser


def _resolve_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fold --auto-resume and --resume-from into ``args.resume``; a resumed run without --config
    takes the folder's config.yaml."""
    if args.force and (args.resume or args.auto_resume or args.resume_from):
        parser.error(
            "--force starts over; it does not go with --resume, --resume-from or --auto-resume"
        )
    if args.auto_resume:
        args.resume = (args.out / "last.pt").exists()
    args.resume = args.resume or args.resume_from is not None
    if args.resume and args.config is None and (args.out / "config.yaml").exists():
        args.config = args.out / "config.yaml"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # the same command as `python -m core.checkpoints export CKPT OUT`
        return checkpoints_main(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    _resolve_resume(args, parser)
    cfg = config_from_args(PretrainConfig, args)

    from core import distributed as dist
    from pretrain.train import ResumeError, Trainer, TrainingDiverged

    info = dist.env_dist_info()
    setup_logging(rank=info.rank)
    # rank 0 holds the folder for all ranks
    lock = RunLock(args.out, "pretrain") if info.is_main else None
    try:
        if lock is not None:
            lock.acquire()  # before anything in the folder is written
        if info.is_main:
            if not args.resume:
                check_fresh_start(args.out, args.force)
            prepare_out_dir(args.out, cfg, stage="pretrain")
        trainer = Trainer(cfg, args.out)
        if info.is_main:
            note_run(args.out, memory_format=trainer.memory.as_dict())
        if args.resume:
            trainer.resume(args.resume_from)
        stats = trainer.fit()
    except (
        ConfigError,
        DataError,
        CheckpointError,
        ResumeError,
        RunExists,
        FolderInUse,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        dist.destroy()
        if lock is not None:
            lock.release()
    if info.is_main:
        summary = f"step {trainer.step}" + (
            f", loss {stats['loss']:.4f}" if "loss" in stats else " (already finished)"
        )
        print(f"done: {summary}; checkpoint {args.out / 'last.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
