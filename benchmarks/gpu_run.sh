#!/usr/bin/env bash
# The one command for a lent GPU machine (issues #14, #16). It is bare: PyTorch with CUDA, onnx,
# onnxruntime, opencv, typer, rich, matplotlib, pytest — no pycocotools. `make gpu-wheels` (here, with
# network) puts that wheel under .gpu-wheels/ (git-ignored); carry that folder with the working tree.
#
#   bash benchmarks/gpu_run.sh OUT check      # benchmarks/gpu_check.py -> OUT/check   (~5 min on one H100)
#   bash benchmarks/gpu_run.sh OUT ablation   # the assignment study's GPU mode -> OUT/ablation
#
# Without a CUDA GPU both say so and exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_run.sh OUT check|ablation}
what=${2:-check}
PY=${PY:-python3}
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU visible: nothing to run"
    exit 0
fi
if compgen -G ".gpu-wheels/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fss-site \
        .gpu-wheels/*.whl || echo "warning: could not install .gpu-wheels/*.whl (evaluation needs pycocotools)"
    export PYTHONPATH="/tmp/fss-site:${PYTHONPATH:-}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
case "$what" in
    check) "$PY" benchmarks/gpu_check.py "$out/check" ;;
    ablation) "$PY" benchmarks/ablation.py --budget decide --device cuda --parallel "${PARALLEL:-12}" --workers 1 \
                  --deadline "${DEADLINE:-420}" --out /tmp/fss-ablation --store "$out/ablation/store" \
                  --report "$out/ablation/ablation.md" ;;
    *) echo "unknown target $what (check | ablation)"; exit 2 ;;
esac
