"""Where a fine-tune's base model came from, for the run's params: dataset -> pretrain -> finetune.

A checkpoint written by a training job sits at ``<run.output>/<run.name>/checkpoint-N/model``; the
pretraining run logged both settings as params, so the MLflow run that produced it is found by them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.checkpoint import HF_CONFIG_FILE
from model.finetune.base import BaseModelConfig, resolve_checkpoint, training_run_of
from pipeline import tracking


def producing_run_id(checkpoint: Path) -> str | None:
    """The MLflow run (at the current tracking URI) whose training wrote ``checkpoint``, if any."""
    written_by = training_run_of(checkpoint)
    if written_by is None:
        return None
    output, name = written_by
    return tracking.find_run(None, params={"run.name": name, "run.output": str(output)})


def lineage_params(config: BaseModelConfig) -> dict[str, Any]:
    """Params naming the base model: its folder, its kind and the MLflow run that trained it."""
    if not config.init_from:
        return {"base.kind": "random-init", "base.checkpoint": "none", "base.mlflow_run_id": "none"}
    checkpoint = resolve_checkpoint(config.init_from)
    kind = "huggingface-gpt2" if (checkpoint / HF_CONFIG_FILE).is_file() else "webllm"
    run_id = config.mlflow_run_id or producing_run_id(checkpoint)
    return {"base.kind": kind, "base.checkpoint": str(checkpoint.resolve()), "base.mlflow_run_id": run_id or "unknown"}
