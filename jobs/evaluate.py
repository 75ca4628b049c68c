"""Evaluate a checkpoint the way pretraining does: validation loss, HellaSwag, sample generations.

    python jobs/evaluate.py --checkpoint data/runs/pretrain-demo/checkpoint-00000300 \
        --config jobs/configs/pretrain-demo.yaml [--set eval.hellaswag.limit=null ...]

``--checkpoint`` is any model reference (``model/reference.py``): one of our checkpoints, a training
checkpoint or run folder, a Hugging Face GPT-2 folder, any of them on ``s3://`` or ``gs://``, or a
registered model ``models:/<name>/<version>``. The config names the token dataset whose validation split
is scored, the evaluations, and the workers they run on (a Ray Train run without training). The
metrics are printed as JSON; with tracking enabled they are also logged as a run of the
``evaluations`` experiment, with the samples as text.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray

from model import tracking
from model.launch import evaluate
from model.pretrain import PretrainConfig, PretrainTask, with_absolute_paths
from model.reference import resolve_model
from pipeline.config import config_parser, load_config, to_dict

EXPERIMENT = "evaluations"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = config_parser(__doc__, "a pretraining config: its data, eval and scaling sections are used")
    parser.add_argument("--checkpoint", "--model", required=True,
                        help="a checkpoint, training run or Hugging Face GPT-2 folder, s3:// or gs:// URL, models:/ URI")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # Checked here; each worker resolves the reference itself (downloading once per node if remote).
        checkpoint = resolve_model(args.checkpoint)
        config = load_config(PretrainConfig, args.config, [*args.set, f"model.init_from={args.checkpoint}"])
        config = with_absolute_paths(config)
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


if __name__ == "__main__":
    sys.exit(main())
