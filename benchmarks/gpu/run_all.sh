#!/usr/bin/env bash
# The GPU table in one go on the device machine (an H100/H200 with 16 cores): install the wheels that
# benchmarks/gpu/fetch_wheels.sh put in .whl/, then run the benchmarks, each log also written to $OUT.
# Device tool: command "bash benchmarks/gpu/run_all.sh STEP", carry [".whl"]. A call may run 10 minutes, so run
# one STEP per call: train (bench_train_step --compile --gan), dat (bf16, remat, torch.compile), degrade (its share
# of the RRDB step), data (host decode with 8 workers), cudnn (the DAT tests on the GPU, cuDNN attention included),
# archs (every other architecture's forward and train step against spandrel's module, bf16).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
case "${1:-}" in
  train) python3 benchmarks/bench_train_step.py --compile --gan ;;
  dat) python3 benchmarks/bench_dat.py --batch 8 --dtype bfloat16 --remat --torch-compile ;;
  degrade) python3 benchmarks/bench_degrade.py --step ;;
  data) python3 benchmarks/bench_data.py --workers 8 ;;
  cudnn) python3 -m pytest -q -p no:cacheprovider tests/test_dat.py tests/test_dat_train.py tests/test_swinir.py tests/test_hat.py ;;
  archs) python3 benchmarks/bench_archs.py --batch 8 --dtype bfloat16 ;;
  *) echo "usage: bash benchmarks/gpu/run_all.sh train|dat|degrade|data|cudnn|archs" >&2; exit 2 ;;
esac 2>&1 | tee "$OUT/${1:-usage}.txt"
