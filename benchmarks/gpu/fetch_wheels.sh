#!/usr/bin/env bash
# Wheels that the GPU machine's image lacks (it has jax, flax, optax, orbax, torch, torchvision, opencv, scikit-image,
# einops), downloaded here into .whl/ (git-ignored) for the device tool to carry. The image's Python is 3.12.
# Then run benchmarks/gpu/run_all.sh there, carrying .whl (see docs/performance.md, "GPU table").
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
plat=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat="$plat --platform $p"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
  grain==0.2.18 array-record portpicker ml-collections==1.1.0 tensorboardX==2.6.5 spandrel==0.4.2 \
  pytorch-optimizer schedulefree pytorch-msssim hsluv
ls -la .whl
