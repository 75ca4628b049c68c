"""Fine-tune a pretrained GPT to follow instructions (Alpaca-format data), with Ray Train.

    python jobs/finetune_instruct.py --config jobs/configs/finetune-instruct.yaml [--set key=value ...]
    ray job submit --working-dir . -- python jobs/finetune_instruct.py --config jobs/configs/finetune-instruct.yaml

``model.init_from`` names the starting point, any model reference (``model/reference.py``): our
checkpoint, a training run's folder (its latest checkpoint), a Hugging Face GPT-2 folder, any of
them on ``s3://`` or ``gs://``, or a registered model ``models:/<name>/<version or @alias>``. The test split's responses are logged to MLflow beside
the references, and scored if ``eval.judge.url`` names an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import sys

import ray

from model.finetune.instruct import InstructConfig, InstructTask
from model.launch import launch
from pipeline.config import config_parser, load_config, to_dict
from pipeline.tracking import tracking_uri


def main(argv: list[str] | None = None) -> int:
    args = config_parser(__doc__, "config YAML (jobs/configs/finetune-instruct*.yaml)").parse_args(argv)
    try:
        config = load_config(InstructConfig, args.config, args.set)
        task = InstructTask(config)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, or a data file that cannot be read
        print(f"config error: {error}", file=sys.stderr)
        return 2
    ray.init()
    outcome = launch(config, task, effective_config=to_dict(config), params=task.params(), datasets=task.inputs())

    final = {**(outcome.result.metrics or {}), **task.final_metrics}
    summary = ", ".join(f"{key} {final[key]:.4f}" for key in ("loss", "val_loss", "test_judge_score") if key in final)
    print(f"\nfinished {config.run.name}: {summary}")
    for entry in task.responses[:3]:
        print(f"\n### {entry['instruction']} {entry.get('input', '')}\n  reference: {entry['output']}\n"
              f"  model:     {entry['model_response']}")
    print(f"\nmodel: {outcome.checkpoint.path}/model")
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id} (experiment {config.tracking.experiment!r}) at {tracking_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
