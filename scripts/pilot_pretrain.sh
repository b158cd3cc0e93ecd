#!/usr/bin/env bash
# Pilot at the embedded default budget for vicreg, vicreg without colour jitter/grayscale, vicreg
# without blur, and mast, over seeds 0-2, into results/runs/pilot/<variant>_s<seed>/. Finished runs are
# skipped; an interrupted run resumes. SEEDS and VARIANTS (space-separated) pick a subset. Then `python -m scripts.pilot_probe` probes the checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/runs/pilot}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"mast vicreg vicreg_nojitter vicreg_noblur"}
declare -A VARIANT=(
  [vicreg]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|"
  [vicreg_nojitter]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|augment.ops=[crop,flip,blur,solarize]"
  [vicreg_noblur]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|augment.ops=[crop,flip,color_jitter,grayscale,solarize]"
  [mast]="configs/pretrain/mast_r18w16_b128_16e_shapes.yaml|"
  # A lever for `shape` (docs/defaults.md): twice the steps at the same epochs and about the same time.
  [vicreg_b64]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|train.batch_size=64"
  [mast_b64]="configs/pretrain/mast_r18w16_b128_16e_shapes.yaml|train.batch_size=64"
  # The hue question (docs/defaults.md): jitter hue over the whole colour circle instead of +/- 0.1 turn.
  [vicreg_hue05]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|augment.hue=0.5"
  # A generator lever for `shape`: objects 1.25 x larger (0.25/0.35/0.45 of the width; probed on data of the same scale).
  [vicreg_scale125]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|data.object_scale=1.25"
  [vicreg_noblur_scale125]="configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml|augment.ops=[crop,flip,color_jitter,grayscale,solarize] data.object_scale=1.25"
)
for seed in $SEEDS; do
  for name in $VARIANTS; do
    IFS='|' read -r config extra <<< "${VARIANT[$name]}"
    dir="$OUT/${name}_s${seed}"
    if [[ -f "$dir/done" ]]; then echo "[pilot] $dir done"; continue; fi
    resume=(); [[ -f "$dir/last.pt" ]] && resume=(--resume)
    echo "[pilot] $dir"
    MAST_NO_PROGRESS=1 "$PY" -m pretrain --config "$config" --out "$dir" "${resume[@]}" --set seed="$seed" $extra
    touch "$dir/done"
  done
done
