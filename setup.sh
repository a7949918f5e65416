#!/usr/bin/env bash
# Set-up: jaxsr (editable) and its test tools in a project virtual environment, .venv (or $JAXSR_VENV), unless the
# current Python already is a venv or conda env. A stock Linux python3 is "externally managed" (PEP 668): pip refuses
# to install into it, and no other project's environment should change. torch goes in first as the pinned CPU build,
# because any looser requirement pulls gigabytes of CUDA packages onto a CPU machine; where no CPU build can be had,
# torch is left out (training, .pth/.safetensors and ONNX need none; the PyTorch reference tests then skip).
# spandrel (the PyTorch reference loader) goes in without its dependencies: it wants torchvision, which tests stub.
# A second run with nothing changed only checks and says so.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
PY=${PYTHON:-python3}
TORCH=torch==2.13.0
say() { echo "set-up: $*"; }

if [ -n "${JAXSR_VENV:-}" ] || [ "$($PY -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or os.path.isdir(os.path.join(sys.prefix, "conda-meta"))))')" = 0 ]; then
    VENV=${JAXSR_VENV:-.venv}
    case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the project environment $VENV with $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])')"
        $PY -m venv "$VENV" || { echo "error: cannot create $VENV: install the venv module (Debian/Ubuntu: apt install python3-venv), or run from an activated venv or conda env" >&2; exit 2; }
    fi
    PY=$VENV/bin/python
fi
ENV_DIR=$($PY -c 'import sys; print(sys.prefix)')
STAMP=$ENV_DIR/.jaxsr-setup
WANT=$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)@$ROOT
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && $PY -c "import jaxsr" 2>/dev/null; then
    say "already set up in $ENV_DIR ($($PY -c 'import jaxsr, sys; print("jaxsr", jaxsr.__version__, "on Python", sys.version.split()[0])'))"
    exit 0
fi
# torch: the CPU build, never a CUDA one on a machine without a GPU
if $PY -c "import torch" 2>/dev/null; then
    torch_note="torch $($PY -c 'import torch; print(torch.__version__)') (already installed)"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    $PY -m pip install -q "$TORCH"
    torch_note="$TORCH (this machine has an NVIDIA GPU)"
elif $PY -m pip install -q --retries 0 --timeout 10 "$TORCH" --index-url https://download.pytorch.org/whl/cpu >/dev/null 2>&1; then
    torch_note="torch $($PY -c 'import torch; print(torch.__version__, "(CPU build)" if torch.version.cuda is None else "")')"
else
    report=$(mktemp)
    $PY -m pip install -q --dry-run --report "$report" "$TORCH" >/dev/null 2>&1 || true
    if $PY -c "import json, sys; r = json.load(open(sys.argv[1])); sys.exit(not r['install'] or any(i['metadata']['name'].startswith('nvidia') for i in r['install']))" "$report" 2>/dev/null; then
        $PY -m pip install -q "$TORCH"
        torch_note="torch $($PY -c 'import torch; print(torch.__version__, "(CPU build)" if torch.version.cuda is None else "")')"
    else
        torch_note="not installed: the only $TORCH pip finds for Python $($PY -c 'import sys; print(*sys.version_info[:2], sep=".")') here is a CUDA build (several GB of nvidia packages). jaxsr trains, reads and writes .pth/.safetensors and exports ONNX without it; the PyTorch reference tests skip. Where PyTorch's index is reachable: $PY -m pip install $TORCH --index-url https://download.pytorch.org/whl/cpu"
    fi
    rm -f "$report"
fi

# this project installs as jaxsr-train; a distribution named jaxsr (an earlier set-up of this checkout, or the unrelated
# package of that name on the package index) would claim the same import name
if $PY -m pip show jaxsr >/dev/null 2>&1; then
    $PY -m pip uninstall -y -q jaxsr
    say "removed the distribution 'jaxsr' from $ENV_DIR: this project installs as jaxsr-train (import name jaxsr)"
fi
$PY -m pip install -q -e ".[test]"
if $PY -c "import torch" 2>/dev/null; then
    $PY -m pip install -q -e ".[test-torch]"  # independent PyTorch references for the tests
    # all three want torchvision (CUDA wheels); tests stub it. spandrel_extra_arches holds SRFormer
    $PY -m pip install -q --no-deps spandrel==0.4.2 spandrel_extra_arches==0.2.0 DISTS_pytorch==0.1
fi
echo "$WANT" > "$STAMP"
say "jaxsr $($PY -c 'import jaxsr; print(jaxsr.__version__)') (editable, from $ROOT) and its test tools in $ENV_DIR, Python $($PY -c 'import sys; print(sys.version.split()[0])')"
say "torch: $torch_note"
case "$ENV_DIR" in "$ROOT"/*) say "activate it with: . ${ENV_DIR#"$ROOT"/}/bin/activate" ;; esac
