#!/usr/bin/env bash
# The one command for a lent GPU machine (issues #14, #16). It is bare: PyTorch with CUDA, onnx,
# onnxruntime, opencv, typer, rich, matplotlib, pytest — no pycocotools, and ../shared does not travel.
# `make gpu-prep` (here, with network and ../shared) fills the git-ignored .gpu-carry/: the pycocotools and
# faster-coco-eval wheels and the DOTA tiles of the study; carry that folder with the working tree.
#
#   bash benchmarks/gpu_run.sh OUT check      # benchmarks/gpu_check.py -> OUT/check   (~4 min on one H100)
#   bash benchmarks/gpu_run.sh OUT ablation   # the assignment study's GPU mode -> OUT/ablation.tar.gz + report
#
# DEADLINE (default 460 s after the data is ready) is the study's hard end; PARALLEL (12) trainings at once;
# RUNS (default '*') picks runs by name pattern, e.g. 'main-*-s0,dotaft-*'.
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
if compgen -G ".gpu-carry/wheels/*.whl" > /dev/null; then
    # one wheel at a time: one that does not fit this machine (faster-coco-eval wants glibc 2.27+) leaves the others
    # in (without faster-coco-eval, evaluation runs on pycocotools: the same numbers, slower)
    for wheel in .gpu-carry/wheels/*.whl; do
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fss-site \
            "$wheel" || echo "warning: could not install $wheel"
    done
    export PYTHONPATH="/tmp/fss-site:${PYTHONPATH:-}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
mkdir -p "$out"
case "$what" in
    check) "$PY" benchmarks/gpu_check.py "$out/check" ;;
    ablation)
        work=/tmp/fss-ablation
        mkdir -p "$work/decide/data"
        if compgen -G ".gpu-carry/data/dota_*_tiles" > /dev/null; then
            cp -r .gpu-carry/data/dota_*_tiles "$work/decide/data/"
        fi
        # the summaries sit two folders down: pack them (and the logs) so they come back as one file
        pack() { tar -czf "$out/ablation.tar.gz" -C "$out" ablation \
                     -C "$work/decide" --exclude='*.pt' --exclude='data' runs 2>/dev/null || true; }
        trap pack EXIT
        # the GPU study continues across leases: runs already in docs/results/ablation/decide-gpu are skipped
        mkdir -p "$out/ablation/store"
        if compgen -G "docs/results/ablation/decide-gpu/*.json" > /dev/null; then
            cp docs/results/ablation/decide-gpu/*.json "$out/ablation/store/"
        fi
        # MPS lets the kernels of the concurrent trainings share the GPU instead of time-slicing it; kept only
        # if a CUDA context opens under it
        if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null \
                && nvidia-cuda-mps-control -d 2> /dev/null; then
            if timeout 60 "$PY" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
                echo "MPS on"
            else
                echo quit | nvidia-cuda-mps-control || true; echo "MPS failed: off"
            fi
        fi
        "$PY" benchmarks/ablation.py --budget decide --device cuda --parallel "${PARALLEL:-12}" --workers 1 --runs "${RUNS:-*}" \
            --deadline "${DEADLINE:-460}" --out "$work" --store "$out/ablation/store" \
            --report "$out/ablation/ablation.md" ;;
    *) echo "unknown target $what (check | ablation)"; exit 2 ;;
esac
