#!/usr/bin/env bash
# The GPU check of issue #43, ONE prepared script for a lent GPU machine (inside 8 minutes, so a rerun fits the
# 15-minute device budget). From the repository root, after `bash benchmarks/gpu_wheels.sh` here:
#   device run: command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540
# Writes to $OUT (or /tmp/gpu_check): device.txt (GPU, driver, torch / CUDA / transformers versions),
# cuda_tests.log (pytest -m cuda), gpu_throughput.json and .log (benchmarks/gpu_throughput.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export HYBRID_RETRIEVAL_CACHE=/tmp/hr_cache
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers, lightning; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| transformers', transformers.__version__, '| lightning', lightning.__version__)"
  python3 -c "import sentence_transformers, hydra, datasets; print('sentence-transformers', sentence_transformers.__version__, '| hydra', hydra.__version__, '| datasets', datasets.__version__)"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"
start=$(date +%s)
timeout 300 python3 -m pytest -q -m cuda -p no:cacheprovider -o addopts="" -rA tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log"
echo "cuda tests: $(( $(date +%s) - start )) s"
timeout 240 python3 benchmarks/gpu_throughput.py --out "$out/gpu_throughput.json" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$out/gpu_throughput.log"
echo "total: $(( $(date +%s) - start )) s"
