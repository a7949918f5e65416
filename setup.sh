#!/usr/bin/env bash
# Installs jaxsr and its test tools into the current Python.
# torch: the pinned CPU build goes in first where no torch is present, so that nothing later pulls
# gigabytes of CUDA packages. spandrel (the PyTorch reference loader) goes in without its
# dependencies because it requires torchvision, which has no CPU build here; tests stub it.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e ".[test]"
$PY -m pip install -q --no-deps spandrel==0.4.2
