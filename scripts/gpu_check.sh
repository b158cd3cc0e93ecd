#!/usr/bin/env bash
# GPU checks on a CUDA machine, in one go: the CUDA + bf16 paths end to end (pretraining of vicreg and mast at
# the embedded scale, a resume from a CUDA checkpoint, classification on the MAST checkpoint) and the bench's
# GPU section (first: it is the one with figures to report). Each step has its own time limit and its exit
# status goes to OUT/status.txt, and the logs are packed after every step, so a failure or a cut-off leaves
# what ran before it.
#
#   scripts/gpu_check.sh OUT_DIR    (PYTHON=python3, WORK=/tmp/gpu_check, WORKERS=8, EPOCHS=16, BENCH_ARGS=,
#                                    PART=all | bench | checks: the bench alone, or everything but it, so
#                                    that each fits one device call of 10 minutes)
#   DEVICE=cpu SMOKE=1 scripts/gpu_check.sh OUT_DIR   (checks this script on a CPU: tiny runs, bench skipped)
#
# OUT_DIR receives machine.txt, status.txt, logs.tgz (logs, metrics, records, configs) and bench/ (gpu.json,
# README.md). Needs torch, torchvision, numpy, pillow, pyyaml, pandas, tqdm and pytest; not mmdet.
set -u
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
work=${WORK:-/tmp/gpu_check}
workers=${WORKERS:-8}
mkdir -p "$out" "$work/logs"
device=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MAST_DATA_CACHE=${MAST_DATA_CACHE:-$work/data}
embedded=configs/pretrain
smoke=("train.epochs=${EPOCHS:-16}")
[ -n "${SMOKE:-}" ] && smoke=(data.n=256 train.epochs=1)
cls_smoke=()
[ -n "${SMOKE:-}" ] && cls_smoke=("tasks=[shape]" "protocols=[knn]")

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to work/logs/NAME.log, record the status
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >"$work/logs/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc seconds=$(($(date +%s) - start))" | tee -a "$out/status.txt"
    pack_logs
}

pack_logs() {  # small files only: no checkpoints, no data, no feature caches
    (cd "$work" && find logs runs -name '*.log' -o -name '*.jsonl' -o -name '*.json' -o -name 'config.yaml' \
        2>/dev/null | grep -v '^runs/data/' | tar czf "$out/logs.tgz" -T -)
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$py" -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__,
torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0), torch.backends.cudnn.version())"
  nproc; } >"$out/machine.txt" 2>&1

part=${PART:-all}
case $part in all | bench | checks) ;; *) echo "PART must be all, bench or checks, got '$part'" >&2; exit 2 ;; esac
# the section at ResNet-50 batch 256 with end-to-end runs (one compiled) takes about 5-7 minutes (estimate)
[ -z "${SMOKE:-}" ] && [ "$part" != checks ] && \
    step bench_gpu "${BENCH_LIMIT:-540}" "$py" -m bench --only gpu --out "$out/bench" ${BENCH_ARGS:-}
[ "$part" = bench ] && exit 0
for method in vicreg mast; do
    step "pretrain_$method" 150 "$py" -m pretrain --config "$embedded/${method}_r18w16_b128_16e_shapes.yaml" \
        --out "$work/runs/$method" --set device="$device" data.num_workers="$workers" "${smoke[@]}"
done
# views rendered on the GPU (issue 23): parity with the CPU's views, then a run that trains on them
step render_parity 120 "$py" -m pytest -q -p no:cacheprovider tests/pretrain/test_views.py -k cuda
# LARS's fused update (an accelerator's default) against its per-tensor one
step lars_foreach 60 "$py" -m pytest -q -p no:cacheprovider tests/pretrain/test_optim.py -k cuda
# train.compile on CUDA: trains like eager, saves plain keys
step compile_parity 240 "$py" -m pytest -q -p no:cacheprovider tests/pretrain/test_train.py -k compiled
# JPEGs decoded by nvJPEG (data.decode: device) against PIL's pixels
step nvjpeg_parity 120 "$py" -m pytest -q -p no:cacheprovider tests/core/test_data_sources.py -k nvjpeg
step pretrain_render_device 150 "$py" -m pretrain --config "$embedded/vicreg_r18w16_b128_16e_shapes.yaml" \
    --out "$work/runs/render_device" --set device="$device" data.num_workers="$workers" views.render=device \
    "${smoke[@]}"
step resume_first 60 "$py" -m pretrain --config "$embedded/mast_r18w16_b128_16e_shapes.yaml" \
    --out "$work/runs/resume" --set device="$device" data.num_workers="$workers" "${smoke[@]}" train.epochs=1
step resume_second 60 "$py" -m pretrain --out "$work/runs/resume" --resume --set train.epochs=2
step classification 150 "$py" -m downstream.classification --ckpt "$work/runs/mast/last.pt" \
    --records "$work/runs/classification.jsonl" --out "$work/runs/classification" \
    --set device="$device" cache="$work/runs/cache" "${cls_smoke[@]}"
