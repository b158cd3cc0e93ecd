# The MAST suite. `make all` runs the whole pipeline on the embedded data (set-up included);
# `make test` sets up and runs the tests. Every target accepts CONFIG=... and ARGS="--set key=value ...".
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mast-setup-stamp
RESULTS ?= results
CONFIG ?=
ARGS ?=
FORCE ?=
JOBS ?=
CONFIG_ARG = $(if $(CONFIG),--config $(CONFIG),)
export PYTHONPATH := $(CURDIR)

.PHONY: help setup all real data check lint format test test-all pretrain eval-cls eval-detection eval-segmentation \
        analysis bench compare study lock clean

help:
	@echo "make setup              create .venv with the pinned stack (mmcv built once, then cached)"
	@echo "make all                set-up + the whole pipeline on the embedded FactorShapes data (JOBS=2 at once)"
	@echo "make real               VICReg and MAST on Fashion-MNIST (apt package; FMNIST=DIR), 3 seeds, vs pixels/floor"
	@echo "make test               set-up + lint + the fast test suite (make test-all: slow tests too)"
	@echo "make lint / make format ruff format and ruff check: check only / rewrite; lint also runs mypy"
	@echo "make data               generate the FactorShapes splits into the data cache"
	@echo "make check              run the stack check (ResNet-50 forward, mmcv RoIAlign/nms on CPU)"
	@echo "make pretrain           pretrain the embedded MAST default (CONFIG=, SEED=, ARGS=; FORCE=1 starts over)"
	@echo "make eval-cls           classification records for every finished run (+ floor, ceiling; CKPT=)"
	@echo "make eval-detection     Faster R-CNN on FactorShapes det: MAST checkpoint (CKPT=) vs random init"
	@echo "make eval-segmentation  Mask R-CNN on FactorShapes det: box and mask AP"
	@echo "make analysis           tables, figures and results/README.md from the records and runs"
	@echo "make compare CKPTS=...  evaluate external checkpoints like ours and add them to the tables"
	@echo "make study              the embedded study: 5 methods x 3 seeds, every evaluation, sweeps (hours; resumes)"
	@echo "make bench              benchmarks into results/bench/ (~10 min on 2 idle cores; ARGS=\"--only data --quick\")"
	@echo "make clean              remove generated outputs under results/runs (not the venv or caches)"

# The stamp is rewritten by the set-up script when the lock file or the script change.
$(STAMP): requirements/lock.txt requirements/oracles.txt scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh

setup:
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh

check: $(STAMP)
	$(PY) -m core.env --check

data: $(STAMP)
	$(PY) -m core.data prepare $(CONFIG_ARG) --out $(RESULTS)/runs/data $(ARGS)

# Format and lint (ruff; settings in pyproject.toml): `make format` rewrites, `make lint` only checks;
# `make lint` also type-checks core/ and pretrain/ (mypy; settings in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff format --check --quiet . || { echo 'make lint: run `make format`' >&2; exit 1; }
	$(PY) -m ruff check --quiet .
	$(PY) -m mypy || { echo 'make lint: mypy found type errors in core/ or pretrain/ (see above)' >&2; exit 1; }

format: $(STAMP)
	$(PY) -m ruff format --quiet .
	$(PY) -m ruff check --fix --quiet .

test: $(STAMP) lint
	$(PY) -m pytest -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest

# JOBS: stages run side by side, this many at once (default 2; scripts/run_all.py says why).
all: $(STAMP)
	@$(PY) -m scripts.run_all --results $(RESULTS) $(if $(FORCE),--force) $(if $(JOBS),--jobs $(JOBS))

# Real data: VICReg and MAST on Fashion-MNIST (apt-get install dataset-fashion-mnist; FMNIST=DIR elsewhere),
# 3 seeds, against raw pixels, random init and a supervised network on the same split.
real: $(STAMP)
	@RESULTS=$(RESULTS) PY=$(PY) $(if $(FMNIST),FMNIST=$(FMNIST)) bash scripts/run_real.sh

PRETRAIN_CONFIG = $(or $(CONFIG),configs/pretrain/mast_and_target_r18w16_b128_16e_shapes.yaml)
SEED ?= 0
PRETRAIN_OUT = $(RESULTS)/runs/$(basename $(notdir $(PRETRAIN_CONFIG)))_s$(SEED)
# Resumes an interrupted run and leaves a finished one alone; FORCE=1 starts over (the old run is moved to
# $(RESULTS)/runs/stale/, never deleted).
pretrain: $(STAMP)
	$(PY) -m pretrain --config $(PRETRAIN_CONFIG) --set seed=$(SEED) $(ARGS:--set=) --out $(PRETRAIN_OUT) \
	  $(if $(FORCE),--force,--auto-resume)

# Sections: pretrain loss_scaling data downstream gpu stages (ARGS="--only ..."); run it on an otherwise idle machine.
bench: $(STAMP)
	$(PY) -m bench --make-log $(RESULTS)/runs/make_all.jsonl --out $(RESULTS)/bench $(ARGS)

CLS_CONFIG = $(or $(CONFIG),configs/classification/linear_knn_shapes.yaml)
CKPT ?=
# Default: every finished checkpoint under results/runs without records yet, plus the random-init floor and
# the supervised ceiling (trained once, then reused). CKPT="a.pt b.pth" evaluates those files instead.
eval-cls: $(STAMP)
	$(PY) -m downstream.classification --config $(CLS_CONFIG) \
	  $(if $(CKPT),$(addprefix --ckpt ,$(CKPT)),--runs $(RESULTS)/runs) --floor --ceiling \
	  --records $(RESULTS)/records/classification.jsonl --ceiling-dir $(RESULTS)/runs/ceiling \
	  --out $(RESULTS)/runs/classification --set cache=$(RESULTS)/runs/cache/features $(ARGS)

DET_CKPT = $(or $(CKPT),$(RESULTS)/runs/mast_and_target_r18w16_b128_16e_shapes_s0/last.pt)
# Embedded protocols on the MAST checkpoint (or CKPT=...) and a random-init floor of the same architecture.
eval-detection: $(STAMP)
	$(PY) -m downstream.detection --protocol embedded-frcnn $(addprefix --ckpt ,$(DET_CKPT)) --floor \
	  --out $(RESULTS)/runs/detection --records $(RESULTS)/records/detection.jsonl $(ARGS)

eval-segmentation: $(STAMP)
	$(PY) -m downstream.detection --protocol embedded-mrcnn $(addprefix --ckpt ,$(DET_CKPT)) --floor \
	  --out $(RESULTS)/runs/detection --records $(RESULTS)/records/segmentation.jsonl $(ARGS)

# Tables, figures and results/README.md from whatever records and runs exist (never trains).
analysis: $(STAMP)
	$(PY) -m analysis all --runs $(RESULTS)/runs --results $(RESULTS) $(ARGS)

# External checkpoints (any layout the importer reads): the same evaluations, then the tables and report.
CKPTS ?=
compare: $(STAMP)
	@test -n "$(CKPTS)" || { echo 'make compare: give CKPTS="a.pth b.pth"' >&2; exit 2; }
	@CKPTS="$(CKPTS)" RESULTS=$(RESULTS) PY=$(PY) bash scripts/compare.sh

# The embedded study (configs/study/embedded.yaml): resumes where it stopped; ARGS="--only pretrain classification"
# or "--seeds 0" run a part, ARGS=--dry-run lists the steps.
STUDY_CONFIG = $(or $(CONFIG),configs/study/embedded.yaml)
study: $(STAMP)
	$(PY) -m scripts.study --config $(STUDY_CONFIG) $(ARGS)

# Re-resolve the lock file from requirements/direct.txt (needs the package index).
lock: $(STAMP)
	bash scripts/lock.sh

clean:
	rm -rf $(RESULTS)/runs
