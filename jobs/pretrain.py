"""Pretrain a GPT on the token shards of a dataset build, with Ray Train.

    python jobs/pretrain.py --config jobs/configs/pretrain-demo.yaml [--set key=value ...]
    ray job submit --working-dir . -- python jobs/pretrain.py --config jobs/configs/pretrain-demo.yaml

Without a cluster it starts a local Ray; under ``ray job submit`` (or with ``RAY_ADDRESS``) it runs
on the cluster. MLflow goes to ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``. A rerun with the same
``run.name`` continues that run from its latest checkpoint.
"""

from __future__ import annotations

import sys

import ray

from model.launch import launch
from model.pretrain import PretrainConfig, PretrainTask, with_absolute_paths
from pipeline.config import config_parser, load_config, to_dict
from pipeline.tracking import tracking_uri


def main(argv: list[str] | None = None) -> int:
    args = config_parser(__doc__, "training config YAML (jobs/configs/pretrain-*.yaml)").parse_args(argv)
    try:
        config = with_absolute_paths(load_config(PretrainConfig, args.config, args.set))
        task = PretrainTask(config)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, or data that is not token shards
        print(f"config error: {error}", file=sys.stderr)
        return 2
    ray.init()
    outcome = launch(config, task, effective_config=to_dict(config), params=task.params(), datasets=task.inputs())

    final = outcome.result.metrics or {}
    summary = ", ".join(f"{key} {final[key]:.4f}" for key in ("loss", "val_loss", "hellaswag_acc_norm") if key in final)
    print(f"\nfinished {config.run.name}: {summary}")
    print(f"model (our checkpoint format): {outcome.checkpoint.path}/model")
    print(f"  generate: python jobs/generate.py --checkpoint {outcome.checkpoint.path}/model --prompt 'Once upon a time'")
    if outcome.run_id:
        print(f"MLflow run: {outcome.run_id} (experiment {config.tracking.experiment!r}) at {tracking_uri()}")
    if outcome.registered_version:
        print(f"registered model: models:/{config.tracking.registered_model}/{outcome.registered_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
