#!/usr/bin/env bash
# The prepared GPU check, for a session that is lent a GPU (about 10 minutes on one H100/H200):
#   1. the tests marked `gpu` (CUDA twins of the CPU tests: iALS, BPR, SASRec bf16 + compile, retrieval, ItemKNN);
#   2. the synthetic 50m preset (written once to $DATA);
#   3. every sequential zoo model's tokens/s and peak GPU memory, bf16, torch.compile, the fused CE
#      (benchmarks/bench_sequential.py; tests/models/sequential -m gpu compares fused CE with the chunked path);
#   4. iALS and BPR seconds per iteration on the GPU beside implicit's CPU classes (benchmarks/bench_ials_bpr.py);
#   5. exact top-100 retrieval on the GPU (benchmarks/bench_retrieval.py);
#   6. ItemKNN exact and pruned with its sparse products on the GPU, Listen+ (benchmarks/bench_itemknn_sansa.py).
# Logs go to $OUT (the device tool's result folder) or ./gpu_results. Run from the repository root with the
# project importable (pip install -e ., or PYTHONPATH=.), plus hydra-core, omegaconf, psutil, scipy, faiss and
# implicit where the machine lacks them: e.g. carried as wheels (see the device tool's README).
set -uo pipefail
OUT=${OUT:-gpu_results}
DATA=${DATA:-/tmp/bench50m}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

$PY -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -n 30 | tee "$OUT/gpu_tests.log"
$PY -m yambda_dl.data.cli synth --preset 50m --root "$DATA" 2>&1 | tail -n 3 | tee "$OUT/synth.log"
$PY benchmarks/bench_sequential.py --root "$DATA" --size 50m --epochs 1 --accelerator gpu --precision bf16-mixed \
  --libraries ours --ours-override compile=true 2>&1 | tee "$OUT/sequential.log"
$PY benchmarks/bench_ials_bpr.py --root "$DATA" --size 50m --accelerator gpu --scenarios 2 --iterations 5 2>&1 | tee "$OUT/ials_bpr.log"
$PY benchmarks/bench_retrieval.py --user-tile 8192 --device cuda 2>&1 | tee "$OUT/retrieval.log"
$PY benchmarks/bench_itemknn_sansa.py --root "$DATA" --size 50m --setups listen_plus --models itemknn itemknn_pruned \
  --device cuda 2>&1 | tee "$OUT/itemknn.log"
