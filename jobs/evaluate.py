"""Evaluate a model the way pretraining does (validation loss and bits per byte, HellaSwag, samples),
or with lm-evaluation-harness.

    python jobs/evaluate.py --model data/runs/pretrain-demo --config jobs/configs/pretrain-demo.yaml \
        [--set eval.hellaswag.limit=100 ...]
    python jobs/evaluate.py --model models:/webllm-demo/1 --lm-eval hellaswag_local [--limit 200]

``--model`` is any model reference (``model/reference.py``): one of our checkpoints, a training
checkpoint or run folder, a Hugging Face GPT-2 folder, any of them on ``s3://`` or ``gs://``, or a
registered model ``models:/<name>/<version>``.

Built in: the config names the token dataset whose validation split is scored, the evaluations and
the workers they run on (a Ray Train run without training). HellaSwag is scored on all 1,000 items
of the shared file, exactly as lm-evaluation-harness scores it, unless ``--set`` says otherwise.

``--lm-eval TASKS`` (comma-separated) runs lm-evaluation-harness instead, offline, on the model's
Hugging Face export (``model/harness.py``): ``hellaswag_local`` is its ``hellaswag`` task over the
shared file; ``--lm-eval-tasks FOLDER`` adds task files of your own that point lm-eval's tasks at
local data. Needs the ``eval`` extra.

The metrics are printed as JSON; with tracking enabled they are also logged as a run of the
``evaluations`` experiment.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray

from model.launch import evaluate
from model.pretrain import PretrainConfig, PretrainTask, with_absolute_paths
from model.reference import resolve_model
from pipeline import tracking
from pipeline.config import config_parser, load_config, to_dict

EXPERIMENT = "evaluations"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = config_parser(__doc__, "a pretraining config: its data, eval and scaling sections are used",
                           config_required=False)
    parser.add_argument("--checkpoint", "--model", required=True,
                        help="a checkpoint, training run or Hugging Face GPT-2 folder, s3:// or gs:// URL, models:/ URI")
    parser.add_argument("--lm-eval", help="lm-evaluation-harness tasks, comma-separated (e.g. hellaswag_local)")
    parser.add_argument("--lm-eval-tasks", action="append", default=[], help="a folder of lm-eval task files")
    parser.add_argument("--limit", type=int, help="lm-eval: the first N documents of each task")
    parser.add_argument("--no-tracking", action="store_true", help="lm-eval: do not log an MLflow run")
    args = parser.parse_args(argv)
    if not args.lm_eval and not args.config:
        parser.error("--config is required, unless --lm-eval runs lm-evaluation-harness instead")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # Checked here; each worker resolves the reference itself (downloading once per node if remote).
        checkpoint = resolve_model(args.checkpoint)
    except FileNotFoundError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.lm_eval:
        return harness(args)
    try:
        overrides = ["eval.hellaswag.limit=null", *args.set, f"model.init_from={args.checkpoint}"]
        config = with_absolute_paths(load_config(PretrainConfig, args.config, overrides))
        task = PretrainTask(config)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, or files that are not what they should be
        print(f"config error: {error}", file=sys.stderr)
        return 2
    ray.init()
    evaluation = evaluate(config, task)
    print(json.dumps(evaluation["metrics"], indent=2))
    for text in evaluation["texts"].values():
        print(text)
    if config.tracking.enabled:
        with tracking.run(EXPERIMENT, f"evaluate-{checkpoint.parent.name}-{checkpoint.name}") as active:
            tracking.log_config(to_dict(config))
            tracking.log_metrics(evaluation["metrics"])
            for artifact_file, text in evaluation["texts"].items():
                tracking.log_text(text, artifact_file)
            print(f"MLflow run: {active.info.run_id} (experiment {EXPERIMENT!r}) at {tracking.tracking_uri()}")
    return 0


def harness(args: argparse.Namespace) -> int:
    from model.harness import run_harness

    tasks = [task.strip() for task in args.lm_eval.split(",") if task.strip()]
    results = run_harness(args.checkpoint, tasks, task_folders=args.lm_eval_tasks, limit=args.limit)
    print(json.dumps(results, indent=2))
    if not args.no_tracking:
        with tracking.run(EXPERIMENT, f"lm-eval-{'-'.join(tasks)}") as active:
            tracking.log_params({"model": args.checkpoint, "lm_eval.tasks": ",".join(tasks), "lm_eval.limit": args.limit})
            tracking.log_metrics({f"lm_eval.{task}.{metric}": value for task, metrics in results.items()
                                  for metric, value in metrics.items()})
            print(f"MLflow run: {active.info.run_id} (experiment {EXPERIMENT!r}) at {tracking.tracking_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
