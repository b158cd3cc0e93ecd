#!/usr/bin/env bash
# Create .venv with the pinned stack: torch, torchvision, mmengine, mmcv (with its compiled CPU ops), mmdet,
# pycocotools, pandas, matplotlib, tqdm, pyyaml, pytest. Unattended; needs only the Python package index.
#
# mmcv 2.1.0 has no binary wheel on PyPI: the first run builds it from the source distribution (about
# 17 minutes on 2 cores) into a wheel cache outside the repository, keyed by mmcv, torch, Python and
# machine; every later run (any clone on this machine) installs that wheel in seconds.
#
# Environment:
#   PYTHON            interpreter to build the venv from (default: python3.11)
#   VENV              venv folder (default: .venv)
#   MAST_WHEEL_CACHE  wheel cache (default: ${XDG_CACHE_HOME:-~/.cache}/mast-suite/wheels)
#   MAX_JOBS          compile jobs for the mmcv build (default: number of cores)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
LOCK=requirements/lock.txt
MMCV_VERSION=2.1.0
CACHE=${MAST_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mast-suite/wheels}
STAMP="$VENV/.mast-setup-stamp"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 or set PYTHON=/path/to/python3.11"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$PYTHON is not Python 3.11 (the pinned torch and mmcv builds need 3.11): set PYTHON=..."

# Everything that decides the environment's content; an unchanged stamp means nothing to do.
ORACLES=requirements/oracles.txt
want_stamp=$(cat "$LOCK" "$ORACLES" scripts/setup_env.sh | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] && "$VENV/bin/python" -m core.env --check >/dev/null 2>&1; then
  say "environment up to date ($VENV)"
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

say "installing the pinned packages from $LOCK (torch is large: about 2 minutes)"
"${PIP[@]}" install -q -r "$LOCK"

# --- mmcv with compiled ops, from the wheel cache or built once from source ---------------------------
torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key="mmcv-${MMCV_VERSION}_torch-${torch_version}_${py_tag}_$(uname -m)"
wheel_dir="$CACHE/$key"
wheel=$(ls "$wheel_dir"/mmcv-*.whl 2>/dev/null | head -n 1 || true)

if [[ -z "$wheel" ]]; then
  say "no cached mmcv wheel for $key: building mmcv $MMCV_VERSION from source (about 17 minutes on 2 cores)"
  build_start=$(date +%s)
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$build/sdist"
  tar -xzf "$build"/sdist/mmcv-*.tar.gz -C "$build"
  src=$(ls -d "$build"/mmcv-"$MMCV_VERSION")
  # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++17 and fails in seconds.
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py" || die "could not patch mmcv's setup.py for C++20"
  # Build against the venv's torch (no isolation), without debug info: half the time, a 7 MB library.
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS=-g0 CXXFLAGS=-g0 \
    "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$build/wheel" "$src"
  mkdir -p "$wheel_dir"
  built=$(ls "$build"/wheel/mmcv-*.whl)
  # Copy then rename, so a half-copied wheel is never taken for a good one.
  cp "$built" "$wheel_dir/.partial.whl"
  mv "$wheel_dir/.partial.whl" "$wheel_dir/$(basename "$built")"
  wheel="$wheel_dir/$(basename "$built")"
  say "built and cached $wheel in $(( $(date +%s) - build_start )) s"
else
  say "using cached mmcv wheel $wheel"
fi
"${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"

# Test-only oracles (lightly's losses for the parity tests): without their dependencies, which
# would pull a second training framework into the suite's environment.
"${PIP[@]}" install -q --no-deps -r "$ORACLES"

say "checking the stack"
"$PY" -m core.env --check || die "the installed stack failed its check (see above)"
echo "$want_stamp" > "$STAMP"
# Real data for `make real` is optional and comes from the system's package manager, not from pip.
compgen -G "${FMNIST:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte*" >/dev/null ||
  say "optional: \`make real\` needs Fashion-MNIST: sudo apt-get install dataset-fashion-mnist (or FMNIST=DIR)"
say "done in $(( $(date +%s) - start )) s"
