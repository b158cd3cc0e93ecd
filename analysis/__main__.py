"""Analysis of records, checkpoints and training logs: tables, figures and the results report.

  python -m analysis tables               records -> results/tables/ (Markdown, CSV, LaTeX)
  python -m analysis masks CKPT...        mask IoU / cosine heatmaps, unique vs shared dims, density
  python -m analysis uncertainty RUN...   uncertainty by difference strength (Spearman), per epoch
  python -m analysis invariance CKPT...   per-op invariance profile of any backbone
  python -m analysis curves RUN...        training curves (loss terms, img/s) from log.jsonl
  python -m analysis sweeps               one table per sensitivity sweep of the study (make study)
  python -m analysis diagnostics          per run: loss terms, gates, uncertainty, mask movement
  python -m analysis report               results/README.md from everything above
  python -m analysis all [--runs DIR]     every step on what exists (make analysis)

Analysis never trains: it reads records (results/records/*.jsonl), checkpoints and logs, and
evaluates checkpoints only where a figure needs it (invariance, uncertainty by strength). Run
`python -m analysis <command> --help` for each command's options.
"""

from __future__ import annotations

import argparse
import sys

from core.logs import setup_logging

COMMANDS = {
    "tables": "tables of the records, one per task family",
    "masks": "mask overlap of MAST checkpoints",
    "uncertainty": "uncertainty versus difficulty of MAST runs",
    "invariance": "per-op invariance profile of backbones",
    "curves": "training curves from pretraining logs",
    "sweeps": "tables of the study's sensitivity sweeps",
    "diagnostics": "what each pretraining run's training did (terms, gates, uncertainty, masks)",
    "report": "write results/README.md",
    "all": "every analysis on the runs and records that exist, then the report",
}


def _module(name: str):
    import importlib

    return importlib.import_module(f"analysis.{'pipeline' if name == 'all' else name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _module(name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        written = _module(args.command).run(args)
    # CheckpointError and input errors are ValueErrors
    except (
        ValueError,
        FileNotFoundError,
        KeyError,
    ) as exc:
        print(f"error: {str(exc).strip(chr(39))}", file=sys.stderr)
        return 2
    print(
        f"{args.command}: {len(written)} file(s) written"
        + (f", e.g. {written[0]}" if written else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
