#!/usr/bin/env bash
# jobs/pretrain.py end to end on one GPU worker: about 200 steps of gpt2-124m at context 1024, bf16,
# torch.compile, through Ray Train and the Ray Data loader. Prints tokens/s and MFU (medians of the
# progress lines after the first 50 steps, which include compilation). Target: MFU >= 40% on an
# H100/H200. It is the training-job case beside benchmarks/gpu.sh's model-level ones (about 5 minutes
# on an H200: a minute to build the shards, a minute to compile, then the steps):
#
#   benchmarks/gpu_pretrain.sh                       # H100/H200 SXM: dense bf16 peak 989 TFLOP/s
#   PEAK_TFLOPS=312 benchmarks/gpu_pretrain.sh       # A100
#   STEPS=400 MICRO_BATCH=16 benchmarks/gpu_pretrain.sh
#
# The data: tinyshakespeare cut into 20-speech documents, built into GPT-2 token shards at context
# 1024 in a temporary folder (a minute on 16 cores); the run repeats it for as many epochs as needed.
# Needs a CUDA build of torch and Triton (for torch.compile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
STEPS="${STEPS:-200}"
MICRO_BATCH="${MICRO_BATCH:-32}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_pretrain.sh: no CUDA device visible to torch; run it on a GPU machine" >&2
    exit 1
fi
cd "$ROOT"
WORK="$(mktemp -d -t webllm-gpu-pretrain-XXXX)"
export RAY_ADDRESS=local RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0

"$PYTHON" - "$WORK" <<'PY'
import json, sys
from pathlib import Path

import ray

from pipeline.build import BuildConfig, build
from pipeline.config import validate
from pipeline.corpus import corpus_path
from pipeline.tokenize import TokenizeConfig, build_token_shards

work = Path(sys.argv[1])
speeches = corpus_path("text", "tinyshakespeare.txt").read_text().split("\n\n")
with open(work / "documents.jsonl", "w") as out:
    for number, start in enumerate(range(0, len(speeches), 20)):
        out.write(json.dumps({"id": f"tinyshakespeare-{number:04d}", "text": "\n\n".join(speeches[start:start + 20])}) + "\n")
ray.init()
build(validate(BuildConfig, {"inputs": [str(work / "documents.jsonl")], "output": str(work / "text"),
                             "dataset": {"name": "tinyshakespeare", "version": "v1"}, "stages": []}))
manifest = build_token_shards(str(work / "text" / "v1"), str(work / "tokens"),
                              validate(TokenizeConfig, {"tokenizer": "gpt2", "context_length": 1024, "val_fraction": 0.1}))
print(f"token shards: {manifest['splits']['train']['sequences']} train sequences of 1024", flush=True)
PY

# The checkpoints (1.5 GB) go with the machine; the log stays in $WORK.
trap 'rm -rf "$WORK/runs"' EXIT
# Stop short of 8 minutes whatever happens (slow compilation...): the steps logged so far still count.
timeout "${TIME_LIMIT_S:-400}" "$PYTHON" jobs/pretrain.py --config jobs/configs/pretrain-gpt2-124m.yaml \
    --set "data.sources=[{path: $WORK/tokens}]" --set "run.output=$WORK/runs" --set run.name=gpu-pretrain \
    --set "run.max_steps=$STEPS" --set run.log_every_steps=10 --set "run.eval_every_steps=$STEPS" \
    --set scaling.num_workers=1 --set scaling.cpus_per_worker=8 \
    --set "batch.global_batch_tokens=$((MICRO_BATCH * 1024))" --set "batch.micro_batch_size=$MICRO_BATCH" \
    --set optim.warmup_steps=20 --set "checkpoint.every_steps=$STEPS" --set data.val_sequences=32 \
    --set eval.val_batches=1 --set eval.hellaswag.enabled=false --set "eval.samples.prompts=[]" \
    --set "tracking.peak_flops_per_worker=${PEAK_TFLOPS}e12" --set tracking.enabled=false \
    2>&1 | tee "$WORK/pretrain.log" || echo "gpu_pretrain.sh: the run stopped early; figures from the steps it logged" >&2

"$PYTHON" - "$WORK/pretrain.log" <<'PY'
import re, statistics, sys

lines = re.findall(r"step +(\d+)/\d+ \| .*?([\d,]+) tok/s \| MFU ([\d.]+)%", open(sys.argv[1]).read())
steady = [(float(rate.replace(",", "")), float(mfu)) for step, rate, mfu in lines if int(step) > 50]
if not steady:
    sys.exit("gpu_pretrain.sh: no progress lines after step 50 in the log")
print(f"jobs/pretrain.py gpt2-124m ctx 1024 bf16 compiled, 1 GPU worker: "
      f"{statistics.median(r for r, _ in steady):,.0f} tokens/s, MFU {statistics.median(m for _, m in steady):.1f}% "
      f"(median of {len(steady)} log intervals after step 50)")
PY
