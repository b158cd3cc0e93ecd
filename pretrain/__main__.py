"""MAST / VICReg pretraining.

  python -m pretrain --config FILE --out DIR [--resume] [--set key=value ...]
      train; DIR gets config.yaml (resolved), run.json, log.jsonl (one line per logged step), last.pt
      (replaced atomically every epoch), masks/epoch_<n>.pt, and epoch_<n>.pt when train.keep_every asks.
      --resume continues from DIR/last.pt (with DIR/config.yaml when --config is not given);
      --auto-resume does so only when DIR/last.pt exists (a finished run is left as it is).
  python -m pretrain export CKPT OUT.pth
      write the bare backbone state_dict that torchvision.models.resnetXX() loads (fc aside).

Several GPUs or processes: torchrun --nproc_per_node N -m pretrain --config FILE --out DIR
"""
from __future__ import annotations

import argparse
import sys

from core.checkpoints import CheckpointError
from core.checkpoints import main as checkpoints_main
from core.cli import add_common_args, config_from_args, prepare_out_dir
from core.config import ConfigError
from core.data.base import DataError
from core.logs import setup_logging
from pretrain.config import PretrainConfig


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # the same command as `python -m core.checkpoints export CKPT OUT`
        return checkpoints_main(argv)
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PretrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--auto-resume", action="store_true",
                        help="continue from OUT/last.pt when it exists, else start (a finished run does nothing)")
    args = parser.parse_args(argv)
    if args.auto_resume:
        args.resume = (args.out / "last.pt").exists()
    if args.resume and args.config is None and (args.out / "config.yaml").exists():
        args.config = args.out / "config.yaml"
    cfg = config_from_args(PretrainConfig, args)

    from core import distributed as dist
    from pretrain.train import ResumeError, Trainer, TrainingDiverged

    info = dist.env_dist_info()
    setup_logging(rank=info.rank)
    try:
        if info.is_main:
            prepare_out_dir(args.out, cfg, stage="pretrain")
        trainer = Trainer(cfg, args.out)
        if args.resume:
            trainer.resume()
        stats = trainer.fit()
    except (ConfigError, DataError, CheckpointError, ResumeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        dist.destroy()
    if info.is_main:
        summary = f"step {trainer.step}" + (f", loss {stats['loss']:.4f}" if "loss" in stats else " (already finished)")
        print(f"done: {summary}; checkpoint {args.out / 'last.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
