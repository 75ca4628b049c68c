"""Batch inference on Ray Data: complete every prompt of a dataset, or score every text.

    python jobs/generate_batch.py --model data/runs/pretrain-demo --input prompts.jsonl --output data/completions
    python jobs/generate_batch.py --model models:/webllm-demo/1 --input data/datasets/demo/v1 \
        --output data/scores --score

The input is Parquet or JSON lines (a file, folder or glob; local or s3://), or a dataset version
(its text shards, as its manifest lists them). Each output row is its
input row plus ``completion`` (or, with ``--score``, ``log_likelihood`` and ``bits_per_byte``). The
output is Parquet with a ``manifest.json``, published like a dataset version; the run is logged to
MLflow (experiment ``batch-inference``). Runs on a local Ray, or on the cluster ``RAY_ADDRESS`` names.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray

from model.serve.batch import BatchSettings, run_batch
from pipeline import tracking
from pipeline.config import ConfigError, to_dict, validate

EXPERIMENT = "batch-inference"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", required=True, help="a checkpoint, training run or HF folder, s3://..., models:/...")
    parser.add_argument("--input", required=True, help="Parquet or JSON-lines file, folder or glob")
    parser.add_argument("--output", required=True, help="the output folder (Parquet + manifest.json)")
    parser.add_argument("--score", action="store_true", help="score texts (log-likelihood, bits per byte) instead")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--text-column", default="text", help="the column --score reads")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--seed", type=int, help="makes sampling repeatable, row by row")
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="actors, one model each")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--batch-rows", type=int, default=64, help="rows each actor completes together")
    parser.add_argument("--overwrite", action="store_true", help="redo an output that is complete")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BatchSettings:
    return validate(BatchSettings, {
        "model": args.model, "input": args.input, "output": args.output,
        "mode": "score" if args.score else "generate", "prompt_column": args.prompt_column,
        "text_column": args.text_column, "workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
        "gpus_per_worker": args.gpus_per_worker, "batch_rows": args.batch_rows, "overwrite": args.overwrite,
        "sampling": {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
                     "top_k": args.top_k, "seed": args.seed, "stop": args.stop},
    })


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if not ray.is_initialized():  # a caller (a test, a notebook) may have connected already
        ray.init()
    result = run_batch(settings)
    if result.skipped:
        print(f"{settings.output} is already complete; nothing to do (use --overwrite to redo it)")
        return 0
    manifest = result.manifest
    with tracking.run(EXPERIMENT, f"{settings.mode}-{settings.output.rstrip('/').rsplit('/', 1)[-1]}") as active:
        tracking.log_config(to_dict(settings))
        counts = {key: value for key, value in manifest.items() if isinstance(value, (int, float))}
        tracking.log_metrics({**counts, "errors": sum(manifest["errors"].values()), "seconds": result.seconds})
        tracking.log_dict(manifest, "manifest.json")
        run_id = active.info.run_id
    print(json.dumps({key: manifest[key] for key in ("rows", "errors", *counts) if key in manifest}, indent=2))
    print(f"output: {settings.output}\nMLflow run: {run_id} (experiment {EXPERIMENT!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
