#!/usr/bin/env bash
# `make compare CKPTS="a.pth b.pth"`: evaluate external checkpoints exactly as the suite's own (classification
# on the 9 FactorShapes tasks, embedded detection and instance segmentation), then rebuild tables and report.
# The importer reads torchvision, VICReg/Barlow Twins, MoCo, solo-learn, lightly and mmselfsup layouts; runs
# whose records exist are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-results}
read -r -a ckpts <<< "$CKPTS"
ckpt_args=(); for c in "${ckpts[@]}"; do ckpt_args+=(--ckpt "$c"); done
echo "[compare] classification"
"$PY" -m downstream.classification --config configs/classification/linear_knn_shapes.yaml "${ckpt_args[@]}" \
  --records "$RESULTS/records/classification.jsonl" --out "$RESULTS/runs/classification" \
  --set cache="$RESULTS/runs/cache/features"
echo "[compare] detection"
"$PY" -m downstream.detection --protocol embedded-frcnn "${ckpt_args[@]}" --out "$RESULTS/runs/detection" \
  --records "$RESULTS/records/detection.jsonl"
echo "[compare] instance segmentation"
"$PY" -m downstream.detection --protocol embedded-mrcnn "${ckpt_args[@]}" --out "$RESULTS/runs/detection" \
  --records "$RESULTS/records/segmentation.jsonl"
echo "[compare] analysis"
"$PY" -m analysis all --runs "$RESULTS/runs" --results "$RESULTS"
