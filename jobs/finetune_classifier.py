"""Fine-tune a pretrained GPT into a text classifier (spam / ham by default), with Ray Train.

    python jobs/finetune_classifier.py --config jobs/configs/finetune-classifier.yaml [--set key=value ...]
    ray job submit --working-dir . -- python jobs/finetune_classifier.py --config jobs/configs/finetune-classifier.yaml

``model.init_from`` names the starting point, any model reference (``model/reference.py``): our
checkpoint, a training run's folder (its latest checkpoint), a Hugging Face GPT-2 folder, any of
them on ``s3://`` or ``gs://``, or a registered model ``models:/<name>/<version or @alias>``. MLflow goes to ``MLFLOW_TRACKING_URI``, else
``./mlflow.db``. A rerun with the same ``run.name`` continues that run from its latest checkpoint.
"""

from __future__ import annotations

import sys

import ray

from model.finetune.classify import ClassifierConfig, ClassifierTask
from model.launch import launch
from pipeline.config import config_parser, load_config, to_dict
from pipeline.tracking import tracking_uri


def main(argv: list[str] | None = None) -> int:
    args = config_parser(__doc__, "config YAML (jobs/configs/finetune-classifier*.yaml)").parse_args(argv)
    try:
        config = load_config(ClassifierConfig, args.config, args.set)
        task = ClassifierTask(config)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, or a data file that cannot be read
        print(f"config error: {error}", file=sys.stderr)
        return 2
    ray.init()
    outcome = launch(config, task, effective_config=to_dict(config), params=task.params(), datasets=task.inputs())

    metrics = task.final_metrics or outcome.result.metrics or {}
    summary = ", ".join(f"{key} {metrics[key]:.4f}" for key in
                        ("train_accuracy", "val_accuracy", "test_accuracy", "test_f1", "val_loss") if key in metrics)
    print(f"\nfinished {config.run.name}: {summary}")
    print(f"classifier checkpoint: {outcome.checkpoint.path}/model")
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id} (experiment {config.tracking.experiment!r}) at {tracking_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
