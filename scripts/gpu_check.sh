#!/usr/bin/env bash
# GPU checks on a CUDA machine: LOMPO's `paper` world model with bf16 autocast
# (steps/s, frames/s, data-wait share), the world-model benchmark's uncertainty checks at paper
# sizes, and MerPO's paper sizes on CUDA (meta-steps, adaptation, ONNX export with parity check).
#   bash scripts/gpu_check.sh TRAIN_STORE HELDOUT_STORE OUT_DIR [WM_STEPS] [BENCH_STEPS]
# (BENCH_STEPS: auto = what fits in ~150 s, 0 = skip the world-model benchmark)
# Each stage has its own time limit; every number lands in OUT_DIR/*.json.
# Results of a run: experiments/12-gpu-check/README.md.
set -uo pipefail
TRAIN=$1; HELD=$2; OUT=$3; WM_STEPS=${4:-400}; BENCH_STEPS=${5:-auto}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"

stage() { local name=$1 limit=$2; shift 2; echo "== $name (limit ${limit}s): $*"; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?; echo "== $name rc=$rc in $((SECONDS - t0)) s"
  tail -n 5 "$OUT/$name.log"; return $rc; }

# 0. the CUDA tests (bf16 autocast, resume after a kill, the run pipeline on the GPU)
stage cuda_tests 240 $PY -m pytest -q -p no:cacheprovider tests/learning/test_cuda.py -rs
# 1. paper preset: LOMPO's sizes (64 x 50 windows), bf16 autocast on CUDA
stage wm_paper 240 $PY -m vmerpo train-model --data "$TRAIN" --config paper --steps "$WM_STEPS" \
    --device cuda --out "$OUT/wm_paper" --no-progress --json
cp "$OUT/wm_paper/metrics.json" "$OUT/wm_paper_metrics.json" 2>/dev/null
# 2. world-model benchmark, uncertainty checks, at paper sizes with the bench preset's ensemble
if [ "$BENCH_STEPS" = auto ]; then  # as many steps as fit in ~150 s at the measured rate
  BENCH_STEPS=$($PY -c "import json,sys; m=json.load(open('$OUT/wm_paper_metrics.json')); print(max(200, min(5000, int(m['steps_per_s'] * 150))))" 2>/dev/null || echo 500)
fi
[ "$BENCH_STEPS" != 0 ] && stage wm_bench 330 $PY -m vmerpo bench world-model --family paper_bench "$TRAIN" "$HELD" --config scripts/configs/wm_paper_bench.json \
    --steps "$BENCH_STEPS" --no-meta --threads 8 --workdir "$OUT/wm_bench" --out "$OUT/wm_bench_paper.json"
# 3. MerPO at paper sizes on CUDA: a short meta-training on the paper world model, adaptation, export
stage merpo 150 $PY -m vmerpo train --data "$TRAIN" --config scripts/configs/merpo_paper_short.json \
    --world-model "$OUT/wm_paper" --device cuda --out "$OUT/merpo" --no-progress --json
stage adapt 120 $PY -m vmerpo adapt --run "$OUT/merpo" --data "$HELD" --task 40 --out "$OUT/adapted" --no-progress --json
$PY -c "import json; m=json.load(open('$OUT/merpo/metrics.json')); print('merpo meta-steps', m['meta_steps'], 'in', round(m['seconds'], 1), 's')" 2>/dev/null
stage export 60 $PY -m vmerpo export --run "$OUT/adapted" --out "$OUT/adapted.onnx" --check --json
exit 0
