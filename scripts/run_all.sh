#!/usr/bin/env bash
# `make all`: every stage that exists, on the embedded FactorShapes data, one progress line per stage.
# Stage wall times go to results/runs/make_all.jsonl. Re-running skips what is done unless FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-results}
LOG="$RESULTS/runs/make_all.jsonl"
mkdir -p "$RESULTS/runs"
stages_total=8
n=0
start_all=$(date +%s)

stage() {  # stage NAME COMMAND...
  local name=$1; shift
  n=$((n + 1))
  printf '\n[make all] stage %d/%d: %s\n' "$n" "$stages_total" "$name"
  local t0; t0=$(date +%s)
  "$@"
  local dt=$(( $(date +%s) - t0 ))
  printf '{"stage": "%s", "seconds": %d, "time": "%s"}\n' "$name" "$dt" "$(date -u +%FT%TZ)" >> "$LOG"
  printf '[make all] %s done in %d s\n' "$name" "$dt"
}

stage "stack check (torch, torchvision, mmcv ops)" "$PY" -m core.env --check
stage "FactorShapes data (all splits)" "$PY" -m core.data prepare --out "$RESULTS/runs/data" ${FORCE:+--force}
# MAST's embedded default is its best configuration in the study (docs/method.md): AND-combined subspaces
# with subspace targets.
for method in mast_and_target vicreg; do
  config="configs/pretrain/${method}_r18w16_b128_16e_shapes.yaml"
  out="$RESULTS/runs/${method}_r18w16_b128_16e_shapes_s0"
  resume=--auto-resume; [[ -n "${FORCE:-}" ]] && resume=--force  # --force moves the old run to stale/
  stage "pretrain $method (embedded default; resumes or skips a finished run)" \
    "$PY" -m pretrain --config "$config" --out "$out" "$resume"
done

stage "classification (9 FactorShapes tasks, linear-lbfgs + knn, floor, ceiling; reuses records and features)" \
  "$PY" -m downstream.classification --config configs/classification/linear_knn_shapes.yaml \
    --ckpt "$RESULTS/runs/mast_and_target_r18w16_b128_16e_shapes_s0/last.pt" \
    --ckpt "$RESULTS/runs/vicreg_r18w16_b128_16e_shapes_s0/last.pt" --floor --ceiling \
    --records "$RESULTS/records/classification.jsonl" --ceiling-dir "$RESULTS/runs/ceiling" \
    --out "$RESULTS/runs/classification" --set cache="$RESULTS/runs/cache/features"

mast_ckpt="$RESULTS/runs/mast_and_target_r18w16_b128_16e_shapes_s0/last.pt"
force=(); [[ -n "${FORCE:-}" ]] && force=(--force)
stage "detection (embedded-frcnn: MAST vs random init; skips recorded runs)" \
  "$PY" -m downstream.detection --protocol embedded-frcnn --ckpt "$mast_ckpt" --floor "${force[@]}" \
    --out "$RESULTS/runs/detection" --records "$RESULTS/records/detection.jsonl"
stage "instance segmentation (embedded-mrcnn: MAST vs random init; skips recorded runs)" \
  "$PY" -m downstream.detection --protocol embedded-mrcnn --ckpt "$mast_ckpt" --floor "${force[@]}" \
    --out "$RESULTS/runs/detection" --records "$RESULTS/records/segmentation.jsonl"
stage "analysis and report (tables, masks, uncertainty, invariance, curves)" \
  "$PY" -m analysis all --runs "$RESULTS/runs" --results "$RESULTS"

printf '\n[make all] finished in %d s. Outputs:\n' "$(( $(date +%s) - start_all ))"
printf '  data summary     %s/runs/data/summary.json\n' "$RESULTS"
printf '  checkpoints      %s/runs/{mast_and_target,vicreg}_r18w16_b128_16e_shapes_s0/last.pt (logs: log.jsonl)\n' "$RESULTS"
printf '  stage timings    %s\n' "$LOG"
printf '  classification   %s/records/classification.jsonl (features: %s/runs/cache/features)\n' "$RESULTS" "$RESULTS"
printf '  detection        %s/records/{detection,segmentation}.jsonl (mmdet logs, weights: %s/runs/detection)\n' "$RESULTS" "$RESULTS"
printf '  tables, figures  %s/tables/, %s/figures/\n' "$RESULTS" "$RESULTS"
printf '  report           %s/README.md\n' "$RESULTS"
