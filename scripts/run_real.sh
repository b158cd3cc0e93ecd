#!/usr/bin/env bash
# `make real`: VICReg and MAST's default pretrained on Fashion-MNIST train (SEEDS, default 0 1 2; configs
# *_r18w16_b128_2e_fashion_mnist.yaml), probed by linear-lbfgs and kNN on its test set beside references computed in
# the same run on the same split: the raw pixels, the random-init backbone (3 seeds) and the same network
# trained supervised at the same budget. Records go to results/records/real.jsonl; `make analysis` tables them.
# Data: the Debian package dataset-fashion-mnist (FMNIST=DIR for IDX files elsewhere). PRETRAIN_SET and CLS_SET
# add key=value overrides to every pretraining / to the classification run (the tests shrink the runs so).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-results}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-0 1 2}
read -r -a pretrain_set <<< "${PRETRAIN_SET:-}"
read -r -a cls_set <<< "${CLS_SET:-}"
if ! compgen -G "$FMNIST/train-images-idx3-ubyte*" >/dev/null; then
  echo "make real: no Fashion-MNIST IDX files in $FMNIST: sudo apt-get install dataset-fashion-mnist," \
    "or FMNIST=DIR for a folder holding train-images-idx3-ubyte[.gz] and the other three files" >&2
  exit 2
fi
ckpts=()
for seed in $SEEDS; do
  for method in vicreg mast_and_target; do
    name="${method}_r18w16_b128_2e_fashion_mnist"
    out="$RESULTS/runs/real/${name}_s$seed"
    printf '\n[make real] pretrain %s seed %s (resumes or skips a finished run)\n' "$method" "$seed"
    "$PY" -m pretrain --config "configs/pretrain/$name.yaml" --out "$out" --auto-resume \
      --set seed="$seed" data.root="$FMNIST" "${pretrain_set[@]}"
    ckpts+=(--ckpt "$out/last.pt")
  done
done
printf '\n[make real] classification: the %d checkpoints, raw pixels, random init, supervised\n' \
  $(( ${#ckpts[@]} / 2 ))
"$PY" -m downstream.classification --config configs/classification/linear_knn_fashion_mnist.yaml \
  "${ckpts[@]}" --floor --ceiling --pixels --records "$RESULTS/records/real.jsonl" \
  --ceiling-dir "$RESULTS/runs/real/ceiling" --out "$RESULTS/runs/real/classification" \
  --set data.root="$FMNIST" cache="$RESULTS/runs/cache/features" "floor_seeds=[0, 1, 2]" "${cls_set[@]}"
printf '\n[make real] done: records in %s/records/real.jsonl; `make analysis` puts them in the report\n' \
  "$RESULTS"
