#!/usr/bin/env bash
# One call, under 8 minutes on one CUDA GPU, runs two benchmarks one after the other:
# 1. `benchmarks/scaling.py gpu` (up to 3 minutes): gpt2-124m at context 1024 in bf16 under
#    torch.compile, DDP against FSDP2: tokens/s, MFU and peak memory; and a 2-stage pipeline on the
#    one device (both stages in one process), whose loss must equal the unsplit model's.
# 2. `benchmarks/model.py gpu` (up to 4.5 minutes): bf16 training throughput and MFU of gpt2-124m,
#    eager and under torch.compile, ours vs the nanoGPT-architecture reference, side by side.
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
PEAK=989
for ((i = 1; i <= $#; i++)); do [[ "${!i}" == "--peak-tflops" ]] && { j=$((i + 1)); PEAK="${!j}"; }; done
timeout 180 "$PYTHON" benchmarks/scaling.py gpu --peak-tflops "$PEAK" || echo "scaling.py gpu: stopped or failed" >&2
exec timeout 270 "$PYTHON" benchmarks/model.py gpu "$@"
