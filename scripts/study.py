"""The embedded study (``make study``): pretrain every method of a study config over its seeds,
evaluate each run (classification, detection, instance segmentation), run the sensitivity sweeps,
then the analysis.

  python -m scripts.study [--config configs/study/embedded.yaml] [--only KIND ...] [--seeds 0 ...]
                          [--runs-matching TEXT] [--skip-matching TEXT] [--dry-run]

Every step is a stage command (``python -m pretrain``, ``python -m downstream.*``, ``python -m
analysis``), so what passes between steps are files. The study resumes where it stopped: a finished
pretraining run is left as it is, an interrupted one resumes, and a step whose records exist is
skipped by the stage itself. A run whose checkpoint is gone (run folders are not committed) but
whose records are all there, for the same resolved config, is skipped too:
``results/study/runs.json`` keeps each run's resolved config, checkpoint digest and machine,
``results/study/times.jsonl`` the wall time of every step, and the study prints its total time. A
run folder whose config differs from the study's (the defaults changed) is moved aside and trained
again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from core.cli import add_set_arg
from core.config import ConfigError, from_dict, load_config, read_yaml, to_dict
from core.io import atomic_write_text, sha256_file
from core.numerics import NUMERICS, is_current
from core.records import ckpt_field, read_records

EVAL_KINDS = ("classification", "detection", "segmentation")
KINDS = ("pretrain", *EVAL_KINDS, "floors", "analysis")
#: The architecture of the random-init floors: the embedded configs' ResNet-18 at base width 16.
FLOOR_ARCH = "resnet18w16"


@dataclasses.dataclass
class DetectionEval:
    """One detection or segmentation evaluation: a protocol card, card overrides, and the seeds it
    runs on."""

    protocol: str = "embedded-frcnn"
    set: list[str] = dataclasses.field(default_factory=list)
    #: Pretraining seeds whose runs get this evaluation (null: every seed of the study).
    seeds: list[int] | None = None


@dataclasses.dataclass
class Evaluations:
    classification: str = "configs/classification/linear_knn_shapes.yaml"
    detection: list[DetectionEval] = dataclasses.field(default_factory=list)
    segmentation: list[DetectionEval] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Sweep:
    """Variants of one pretraining config; each variant is a list of ``key=value`` overrides (an
    empty list is the base config itself, whose run the study already has). Sweep runs get the
    classification only."""

    base: str = "configs/pretrain/mast_r18w16_b128_16e_shapes.yaml"
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    variants: dict[str, list[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StudyConfig:
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    #: Pretraining configs, one per method of the study; run folders are <runs>/<config
    #: name>_s<seed>.
    methods: list[str] = dataclasses.field(default_factory=list)
    evaluations: Evaluations = dataclasses.field(default_factory=Evaluations)
    sweeps: dict[str, Sweep] = dataclasses.field(default_factory=dict)
    runs: str = "results/runs"
    results: str = "results"


@dataclasses.dataclass
class Run:
    folder: Path
    config: str
    overrides: list[str]
    seed: int
    sweep: str | None = None

    @property
    def name(self) -> str:
        """The folder name, with ``sweeps/<sweep>/`` for sweep runs (step names in times.jsonl)."""
        return f"sweeps/{self.sweep}/{self.folder.name}" if self.sweep else self.folder.name

    @property
    def ckpt(self) -> Path:
        return self.folder / "last.pt"

    @property
    def records_dir(self) -> str:
        return "sweeps" if self.sweep else ""


# -----------------------------------------------------------------------------------------------
# plan
def resolved_config(run: Run) -> dict:
    from pretrain.config import PretrainConfig

    return to_dict(load_config(PretrainConfig, run.config, [*run.overrides, f"seed={run.seed}"]))


def config_hash(config: dict) -> str:
    """Hash of a pretraining config read through today's schema, so that a key added since (with its
    default) does not make an old run look different; a config the schema no longer reads hashes as
    stale."""
    from pretrain.config import PretrainConfig

    try:
        config = to_dict(from_dict(PretrainConfig, config))
    except ConfigError:
        return "stale"
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def method_runs(cfg: StudyConfig, seeds: list[int]) -> list[Run]:
    return [
        Run(Path(cfg.runs) / f"{Path(c).stem}_s{s}", c, [], s) for s in seeds for c in cfg.methods
    ]


def _trained_with(folder: Path, known: dict) -> str | None:
    """The config hash of the run in ``folder``, or of the one the ledger ``known`` (runs.json)
    remembers there when the folder was not kept (None: nothing trained there)."""
    on_disk = folder / "config.yaml"
    if on_disk.is_file():
        return config_hash(read_yaml(on_disk))
    remembered = known.get(str(folder), {}).get("resolved")
    return config_hash(remembered) if remembered else None


def sweep_runs(cfg: StudyConfig) -> dict[tuple[str, str], list[Run]]:
    """The runs of every (sweep, variant). A variant whose resolved config equals a method run's
    (the base config itself, or e.g. ``method=mast_nounc``) is that run, so nothing is trained
    twice; unless the method's folder still holds a run of another config (the method's default
    changed to this variant's, the method run waits to be retrained) while the variant's own
    folder holds this config: its records are then the variant's."""
    by_config = {config_hash(resolved_config(r)): r for r in method_runs(cfg, cfg.seeds)}
    known = Ledger(Path(cfg.results) / "study").runs
    plan = {}
    for name, sweep in cfg.sweeps.items():
        for variant, overrides in sweep.variants.items():
            runs = []
            for seed in sweep.seeds:
                run = Run(
                    Path(cfg.runs) / "sweeps" / name / f"{variant}_s{seed}",
                    sweep.base,
                    overrides,
                    seed,
                    name,
                )
                chash = config_hash(resolved_config(run))
                method = by_config.get(chash)
                # the variant's own run first: most variants have none, and it spares the read
                if method is not None and not (
                    _trained_with(run.folder, known) == chash
                    and _trained_with(method.folder, known) not in (None, chash)
                ):
                    run = method
                runs.append(run)
            plan[name, variant] = runs
    return plan


def plan_runs(cfg: StudyConfig, seeds: list[int], sweeps: dict | None = None) -> list[Run]:
    """Runs in the order they are worth having: the first seed of every method, the sweeps, the
    other seeds. ``sweeps``: ``sweep_runs(cfg)`` when the caller has it already (it resolves every
    config)."""
    runs = method_runs(cfg, seeds[:1])
    for variant_runs in (sweeps if sweeps is not None else sweep_runs(cfg)).values():
        runs += [r for r in variant_runs if r.sweep and r.seed in seeds and r not in runs]
    return runs + method_runs(cfg, seeds[1:])


def sweep_index(cfg: StudyConfig, sweeps: dict | None = None) -> dict:
    """What analysis needs to build the sweep tables: per sweep and variant, its overrides and run
    folders."""
    index: dict = {}
    for (name, variant), runs in (sweeps if sweeps is not None else sweep_runs(cfg)).items():
        index.setdefault(name, {})[variant] = {
            "overrides": cfg.sweeps[name].variants[variant],
            "runs": [str(r.folder) for r in runs],
        }
    return {"methods": [Path(c).stem for c in cfg.methods], "seeds": cfg.seeds, "sweeps": index}


# -----------------------------------------------------------------------------------------------
# state
def run_machine(folder: Path) -> dict | None:
    """The ``machine`` (CPU, threads) a pretraining run's ``run.json`` names, or None."""
    try:
        machine = json.loads((folder / "run.json").read_text()).get("machine")
    except (OSError, ValueError, AttributeError):
        return None
    return machine if isinstance(machine, dict) else None


class Ledger:
    """``results/study/runs.json`` (config, checkpoint digest and machine per run) and
    ``times.jsonl``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.runs_file, self.times_file = folder / "runs.json", folder / "times.jsonl"
        self.runs = json.loads(self.runs_file.read_text()) if self.runs_file.is_file() else {}

    def remember(self, run: Run, digest: str, config: dict, numerics: int = NUMERICS) -> None:
        before = self.runs.get(str(run.folder), {})
        # the machine that last trained the run (its run.json); a folder gone since keeps the one
        # remembered with the same checkpoint. The same seed gives the same weights on one CPU only.
        machine = run_machine(run.folder)
        if machine is None and before.get("ckpt_sha256") == digest:
            machine = before.get("machine")
        self.runs[str(run.folder)] = {
            "ckpt_sha256": digest,
            "resolved": config,
            "config": run.config,
            "overrides": run.overrides,
            "numerics": numerics,
            **({"machine": machine} if machine else {}),
        }
        atomic_write_text(self.runs_file, json.dumps(self.runs, indent=2, sort_keys=True) + "\n")

    def time(self, step: str, seconds: float, ran: bool) -> None:
        line = json.dumps(
            {
                "step": step,
                "seconds": round(seconds, 1),
                "ran": ran,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.times_file, "a") as handle:
            handle.write(line + "\n")

    def steps(self) -> list[dict]:
        if not self.times_file.is_file():
            return []
        return [
            json.loads(line) for line in self.times_file.read_text().splitlines() if line.strip()
        ]

    def total_seconds(self) -> float:
        return sum(step["seconds"] for step in self.steps())

    @functools.cached_property
    def _past(self) -> tuple[dict[str, float], dict[tuple, list[float]]]:
        latest, by_kind = {}, {}
        for step in self.steps():
            latest[step["step"]] = step["seconds"]
            if step["seconds"] >= MIN_WORK_SECONDS:  # shorter ones found their work done
                by_kind.setdefault(step_kind(step["step"]), []).append(step["seconds"])
        return latest, by_kind

    def estimate(self, step: str) -> float | None:
        """Seconds ``step`` should take: its own latest time, else the median of its kind's steps
        that did work; None when none of its kind has run yet."""
        latest, by_kind = self._past
        if step in latest:
            return latest[step]
        times = sorted(by_kind.get(step_kind(step), []))
        return times[len(times) // 2] if times else None


MIN_WORK_SECONDS = 30.0  # a step that took less only found its output there already


def step_kind(step: str) -> tuple:
    """What sets a step's cost: the stage, for pretraining the view mode (factorized and LooC's
    views, 7 of an image, cost ~3 x a pair), for detection and segmentation the protocol."""
    words = step.split()
    if words[0] == "pretrain":
        return ("pretrain", "factorized" in step or "looc" in step)
    return tuple(words[:2]) if words[0] in ("detection", "segmentation") else (words[0],)


def checkpoint_facts(run: Run) -> tuple[int, int]:
    """(epochs done, numerics version) of the run's checkpoint, read once; version 1 for a
    checkpoint from before versions were kept (core/numerics.py). An interrupted run has fewer
    epochs than configured."""
    import torch

    state = torch.load(run.ckpt, map_location="cpu", weights_only=True)
    state = state if isinstance(state, dict) else {}
    return int(state.get("epoch", 0)), int(state.get("numerics", 1))


@functools.lru_cache(maxsize=8)
def _tasks_by_checkpoint(records: Path, mtime_ns: int, size: int) -> dict[str, frozenset[str]]:
    """sha256 of each checkpoint in ``records`` -> the tasks it has records for (read once per file
    version)."""
    table = read_records(records)
    found: dict[str, set[str]] = {}
    for ref, task in zip(table.get("pretrain_ckpt", []), table.get("task", [])):
        if digest := ckpt_field(ref):
            found.setdefault(digest, set()).add(task)
    return {digest: frozenset(tasks) for digest, tasks in found.items()}


def has_floor_records(records: Path, evaluation: DetectionEval, seed: int) -> bool:
    """Whether ``records`` holds the random-init floor of ``evaluation`` for ``seed``, by the
    detection stage's own skip rule on the card it resolves from the evaluation's overrides."""
    from core.backbones import parse_arch
    from core.checkpoints import FLOOR_INIT, Backbone
    from core.config import parse_override
    from downstream.detection.__main__ import already_recorded
    from downstream.detection.runner import load_card

    card = load_card(
        evaluation.protocol, {".".join(k): v for k, v in map(parse_override, evaluation.set)}
    )
    # the record's identity only: no weights
    floor = Backbone(None, "random-init", *parse_arch(FLOOR_ARCH), init=FLOOR_INIT)
    return already_recorded(records, card, floor, None, seed)


def has_records(records: Path, digest: str, tasks: set[str] | None = None) -> bool:
    """Whether ``records`` holds results of the checkpoint with sha256 ``digest`` (for every task of
    ``tasks``)."""
    if not records.is_file():
        return False
    stat = records.stat()
    mine = _tasks_by_checkpoint(records.resolve(), stat.st_mtime_ns, stat.st_size).get(digest)
    return mine is not None and (tasks is None or tasks <= mine)


# -----------------------------------------------------------------------------------------------
# steps
def detection_step(kind: str, evaluation: DetectionEval, label: str) -> str:
    """The step name of one detection / segmentation evaluation (as in times.jsonl)."""
    return " ".join([kind, evaluation.protocol, *evaluation.set, label])


class Study:
    def __init__(self, cfg: StudyConfig, python: str, dry_run: bool, only: set[str]):
        self.cfg, self.python, self.dry_run, self.only = cfg, python, dry_run, only
        self.results = Path(cfg.results)
        self.ledger = Ledger(self.results / "study")
        self.session = 0.0
        # dry run: estimated seconds of the listed steps, steps without one
        self.expected, self.unknown = (
            0.0,
            0,
        )

    def records(self, kind: str, run: Run | None = None) -> Path:
        sub = run.records_dir if run else ""
        return self.results / "records" / (f"{sub}.jsonl" if sub else f"{kind}.jsonl")

    def call(self, name: str, argv: list[str]) -> None:
        print(f"[study] {name}\n        $ {shlex.join(argv)}", flush=True)
        if self.dry_run:
            self.expect(name)
            return
        start = time.time()
        result = subprocess.run(
            argv, env={**os.environ, "MAST_NO_PROGRESS": os.environ.get("MAST_NO_PROGRESS", "1")}
        )
        seconds = time.time() - start
        self.session += seconds
        self.ledger.time(name, seconds, True)
        if result.returncode != 0:
            sys.exit(
                f"[study] step failed (exit {result.returncode}): {name}; fix the cause and run "
                "the study again: it resumes here"
            )

    def expect(self, step: str) -> None:
        seconds = self.ledger.estimate(step)
        self.expected += seconds or 0.0
        self.unknown += seconds is None

    def expect_evaluations(self, run: Run) -> None:
        """Dry run, a run not pretrained yet: its evaluations are not listed but count in the
        estimate."""
        names = [f"classification {run.name}"] if "classification" in self.only else []
        names += [
            detection_step(kind, e, run.folder.name)
            for kind, e in self.evaluations_of(run)
            if kind in self.only
        ]
        for name in names:
            self.expect(name)
        if names:
            print(f"[study]   then {len(names)} evaluation step(s) after pretraining")

    def set_aside(self, run: Run, reason: str) -> None:
        """Move a run folder that cannot be resumed to ``<runs>/stale/`` (kept, not deleted)."""
        aside = Path(self.cfg.runs) / "stale" / f"{run.folder.name}-{time.strftime('%Y%m%d%H%M%S')}"
        print(f"[study] {run.folder} {reason}: moved to {aside}")
        if not self.dry_run:
            aside.parent.mkdir(parents=True, exist_ok=True)
            run.folder.rename(aside)

    def pretrain(self, run: Run, chash: str, resolved: dict) -> None:
        on_disk = run.folder / "config.yaml"
        if on_disk.is_file() and config_hash(read_yaml(on_disk)) != chash:
            self.set_aside(run, "was trained with another config")
        elif run.ckpt.is_file() and not is_current(numerics := checkpoint_facts(run)[1], resolved):
            self.set_aside(
                run,
                f"was computed with numerics version {numerics}, now {NUMERICS} (core/numerics.py)",
            )
        sets = [*run.overrides, f"seed={run.seed}"]
        self.call(
            f"pretrain {run.name}",
            [
                self.python,
                "-m",
                "pretrain",
                "--config",
                run.config,
                "--out",
                str(run.folder),
                "--auto-resume",
                "--set",
                *sets,
            ],
        )

    def classification(self, run: Run) -> None:
        self.call(
            f"classification {run.name}",
            [
                self.python,
                "-m",
                "downstream.classification",
                "--config",
                self.cfg.evaluations.classification,
                "--ckpt",
                str(run.ckpt),
                "--records",
                str(self.records("classification", run)),
                "--out",
                str(self.results / "runs" / "classification"),
                "--set",
                f"cache={self.results / 'runs' / 'cache' / 'features'}",
            ],
        )

    def detection(self, kind: str, run: Run | None, evaluation: DetectionEval, seed: int) -> None:
        target = ["--ckpt", str(run.ckpt)] if run else ["--floor", "--arch", FLOOR_ARCH]
        label = run.folder.name if run else f"random-init_s{seed}"
        out = self.results / "runs" / "study-detection" / label
        self.call(
            detection_step(kind, evaluation, label),
            [
                self.python,
                "-m",
                "downstream.detection",
                "--protocol",
                evaluation.protocol,
                *target,
                "--seed",
                str(0 if run else seed),
                "--out",
                str(out),
                "--records",
                str(self.records(kind)),
                *(["--set", *evaluation.set] if evaluation.set else []),
            ],
        )

    def evaluations_of(self, run: Run) -> list[tuple[str, DetectionEval]]:
        if run.sweep:
            return []
        ev = self.cfg.evaluations
        return [
            (kind, e)
            for kind in ("detection", "segmentation")
            for e in getattr(ev, kind)
            if e.seeds is None or run.seed in e.seeds
        ]

    def recorded(self, kind: str, evaluation: DetectionEval, digest: str) -> bool:
        """Whether a detection / segmentation evaluation of checkpoint ``digest`` is in the
        records."""
        task = next(
            (s.split("=", 1)[1] for s in evaluation.set if s.startswith("data.categories=")),
            "shape",
        )
        return has_records(self.records(kind), digest, {task})

    def complete(self, run: Run, digest: str) -> bool:
        """Whether every evaluation of ``run`` has records for checkpoint ``digest``."""
        return has_records(self.records("classification", run), digest) and all(
            self.recorded(kind, evaluation, digest) for kind, evaluation in self.evaluations_of(run)
        )

    def finished_and_evaluated(self, run: Run, resolved: dict, chash: str) -> bool:
        """Whether the run's checkpoint is finished, current (config, numerics) and has every
        record: then no step of it would do anything, and listing them would only inflate the dry
        run's estimate."""
        on_disk = run.folder / "config.yaml"
        if not on_disk.is_file() or config_hash(read_yaml(on_disk)) != chash:
            return False
        epochs, numerics = checkpoint_facts(run)
        if epochs < resolved["train"]["epochs"] or not is_current(numerics, resolved):
            return False
        digest = sha256_file(run.ckpt)
        if not self.complete(run, digest):
            return False
        if not self.dry_run:
            self.ledger.remember(run, digest, resolved, numerics)
        return True

    def do_run(self, run: Run) -> None:
        resolved = resolved_config(run)
        chash = config_hash(resolved)
        known = self.ledger.runs.get(str(run.folder), {})
        if (
            not run.ckpt.is_file()
            and config_hash(known.get("resolved", {})) == chash
            and is_current(known.get("numerics", 1), resolved)
            and self.complete(run, known.get("ckpt_sha256", ""))
        ):
            print(f"[study] {run.name}: every record is there (checkpoint not kept), skipped")
            return
        if run.ckpt.is_file() and self.finished_and_evaluated(run, resolved, chash):
            print(f"[study] {run.name}: finished and every record is there, skipped")
            return
        if "pretrain" in self.only:
            self.pretrain(run, chash, resolved)
        if not run.ckpt.is_file():
            if self.dry_run and "pretrain" in self.only:
                self.expect_evaluations(run)
            return  # dry run, or pretraining left out with --only
        epochs, numerics = checkpoint_facts(run)
        if epochs < resolved["train"]["epochs"]:
            print(
                f"[study] {run.name}: pretraining not finished (left out with --only?); its "
                "evaluations wait"
            )
            if self.dry_run and "pretrain" in self.only:
                self.expect_evaluations(run)
            return
        digest = sha256_file(run.ckpt)
        if not self.dry_run:
            self.ledger.remember(run, digest, resolved, numerics)
        if "classification" in self.only:
            self.classification(run)
        for kind, evaluation in self.evaluations_of(run):
            # recorded ones are skipped here: the detection command would find them too, after ~8 s
            # of start-up
            if kind in self.only and not self.recorded(kind, evaluation, digest):
                self.detection(kind, run, evaluation, run.seed)

    def floors(self, seeds: list[int]) -> None:
        self.call(
            "classification floors and ceiling",
            [
                self.python,
                "-m",
                "downstream.classification",
                "--config",
                self.cfg.evaluations.classification,
                "--floor",
                "--ceiling",
                "--arch",
                FLOOR_ARCH,
                "--set",
                f"floor_seeds={json.dumps(seeds)}",
                f"cache={self.results / 'runs' / 'cache' / 'features'}",
                "--records",
                str(self.records("classification")),
                "--out",
                str(self.results / "runs" / "classification"),
                "--ceiling-dir",
                str(self.results / "runs" / "ceiling"),
            ],
        )
        for kind in ("detection", "segmentation"):
            for evaluation in getattr(self.cfg.evaluations, kind):
                for seed in (s for s in seeds if evaluation.seeds is None or s in evaluation.seeds):
                    if has_floor_records(self.records(kind), evaluation, seed):
                        # The stage would skip it too; saying so here keeps the dry run's estimate
                        # honest.
                        print(
                            f"[study] {detection_step(kind, evaluation, f'random-init_s{seed}')}: "
                            "recorded, skipped"
                        )
                        continue
                    self.detection(kind, None, evaluation, seed)

    def analysis(self) -> None:
        self.call(
            "analysis",
            [
                self.python,
                "-m",
                "analysis",
                "all",
                "--runs",
                self.cfg.runs,
                "--results",
                str(self.results),
            ],
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=Path("configs/study/embedded.yaml"))
    add_set_arg(parser, "override study keys, e.g. seeds=[0]")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help="step kinds to run (default: all): %(choices)s",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="a subset of the study's seeds")
    parser.add_argument(
        "--runs-matching", default="", help="only runs whose folder path contains this text"
    )
    parser.add_argument(
        "--skip-matching", default=None, help="leave out runs whose folder path contains this text"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the steps and the hours they should take (from past step times), running "
        "nothing",
    )
    return parser


def _plan(
    args: argparse.Namespace,
) -> tuple[StudyConfig, list[int], dict[tuple[str, str], list[Run]], list[Run]]:
    """The study config, its seeds, its sweeps and the runs the command line selects."""
    try:
        cfg = load_config(StudyConfig, args.config, args.overrides)
        seeds = [s for s in cfg.seeds if args.seeds is None or s in args.seeds]
        # Resolves every method and sweep config once: a typo stops the study here, before any work.
        sweeps = sweep_runs(cfg)
        runs = [
            r
            for r in plan_runs(cfg, seeds, sweeps)
            if args.runs_matching in str(r.folder)
            and not (args.skip_matching and args.skip_matching in str(r.folder))
        ]
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")
    return cfg, seeds, sweeps, runs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg, seeds, sweeps, runs = _plan(args)
    study = Study(cfg, sys.executable, args.dry_run, set(args.only))
    atomic_write_text(
        study.results / "study" / "index.json",
        json.dumps(sweep_index(cfg, sweeps), indent=2) + "\n",
    )
    print(
        f"[study] {len(runs)} runs, seeds {seeds}; steps: "
        f"{', '.join(k for k in KINDS if k in args.only)}"
    )
    for i, run in enumerate(runs, 1):
        print(f"[study] run {i}/{len(runs)}: {run.folder}", flush=True)
        study.do_run(run)
    if "floors" in args.only:
        study.floors(seeds)
    if "analysis" in args.only:
        study.analysis()
    if args.dry_run:
        unknown = (
            f"; {study.unknown} step(s) of a kind not timed yet are not counted"
            if study.unknown
            else ""
        )
        print(
            f"[study] dry run: about {study.expected / 3600:.1f} h of steps left at past speeds "
            f"(results/study/times.jsonl){unknown}"
        )
    print(
        f"[study] this session: {study.session / 60:.1f} min of steps; the study so far: "
        f"{study.ledger.total_seconds() / 3600:.2f} h (results/study/times.jsonl)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
