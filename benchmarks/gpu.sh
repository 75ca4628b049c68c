#!/usr/bin/env bash
# bf16 training throughput and MFU of gpt2-124m at context 1024 on one CUDA GPU: eager and under
# torch.compile, ours vs the nanoGPT-architecture reference, side by side in one process
# (`python benchmarks/model.py gpu`). One call stays under 8 minutes: two models are compiled
# (about a minute each), and each of the four cases runs 10 warm-up + 30 timed steps of 16k tokens.
#
#   benchmarks/gpu.sh                          # H100/H200 SXM: dense bf16 peak 989 TFLOP/s
#   benchmarks/gpu.sh --peak-tflops 312        # A100
#   benchmarks/gpu.sh --batch-size 32          # any flag of `benchmarks/model.py gpu`
#   benchmarks/gpu.sh --pretrain               # the training job instead: jobs/pretrain.py, 1 GPU worker,
#                                              # ~200 steps (benchmarks/gpu_pretrain.sh); a call of its own
#
# Needs a CUDA build of torch (the project's lock pins the CPU one) and, for torch.compile, Triton.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1)); run it on a GPU machine" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
cd "$ROOT"
if [[ "${1:-}" == "--pretrain" ]]; then shift; exec "$ROOT/benchmarks/gpu_pretrain.sh" "$@"; fi
# Stop short of the 8-minute budget even if compilation is slow; rows already printed stay.
exec timeout 470 "$PYTHON" benchmarks/model.py gpu "$@"
