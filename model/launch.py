"""The driver side of a training job: one MLflow run around one Ray Train ``TorchTrainer.fit()``.

    create the MLflow run: effective config, model size, git commit, the dataset as an input
    fit() on the workers (model/train.py), which log into that run by its id, restarts included
    keep the result: the final model as an MLflow pyfunc that serves it (our checkpoint inside; a
    classifier's checkpoint as it is), the Hugging Face layout, the loss curve, and a new version
    of the registered model

A rerun with the same ``run.name`` and ``run.output`` continues that Ray Train run from its latest
checkpoint (Ray Train keeps the run's state in that folder), and logs into the same MLflow run
(found by its ``ray_train_run`` tag): no params logged twice, one loss curve. A finished one is not
trained again, and registers no new model version.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.fs
import ray.data
import ray.train
import torch
from ray.train.torch import TorchTrainer

from model import parallel, train_state
from model.inference import finetune_metadata
from model.serve.pyfunc import log_generative_model
from model.sharded_state import load_full_model
from model.train import Job, TrainingTask, evaluate_worker, train_worker
from model.train_config import TrainConfig
from pipeline import tracking
from pipeline.storage import absolute


@dataclass(frozen=True)
class DatasetInput:
    """A dataset the run reads, for MLflow's inputs: where it is and its manifest."""

    name: str
    source: str
    manifest: dict[str, Any]


@dataclass
class Outcome:
    result: ray.train.Result
    checkpoint: ray.train.Checkpoint  # the run's model: the last checkpoint, or the best with keep_best
    run_id: str | None = None
    registered_version: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def launch(
    config: TrainConfig,
    task: TrainingTask,
    effective_config: dict[str, Any],
    params: dict[str, Any],
    datasets: list[DatasetInput],
) -> Outcome:
    """Train ``task`` as ``config`` says. ``params`` are logged beside the config (model size...)."""
    if not config.tracking.enabled:
        return _fit(config, task, Job(config, task))
    train_run = f"{absolute(config.run.output)}/{config.run.name}"
    tags = {"job": config.run.name, TRAIN_RUN_TAG: train_run}
    # A rerun continues the Ray Train run from its latest checkpoint: it continues its MLflow run too.
    continued = tracking.find_run(config.tracking.experiment, {TRAIN_RUN_TAG: train_run}) if _has_checkpoints(train_run) else None
    with tracking.run(config.tracking.experiment, config.run.name, tags=tags, run_id=continued) as active:
        run_id = active.info.run_id
        if continued is None:  # a continued run has its params and inputs already
            tracking.log_config(effective_config)
            tracking.log_params({**params, "git_commit": tracking.git_commit()})
            for dataset in datasets:
                tracking.log_dataset(dataset.manifest, dataset.source, dataset.name)
        outcome = _fit(config, task, Job(config, task, tracking.tracking_uri(), run_id))
        outcome.run_id = run_id
        if outcome.history or continued is None:  # a new model only if training ran
            _keep_final_model(outcome, task, config)
    return outcome


# The MLflow tag naming the Ray Train run (its storage folder) an MLflow run tracks.
TRAIN_RUN_TAG = "ray_train_run"


def _has_checkpoints(train_run: str) -> bool:
    """Whether Ray Train's run folder holds a checkpoint, which a rerun would continue from."""
    filesystem, path = fsspec.core.url_to_fs(train_run)
    return filesystem.isdir(path) and any(
        child.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint-") for child in filesystem.ls(path, detail=False))


def evaluate(config: TrainConfig, task: TrainingTask) -> dict[str, Any]:
    """The task's evaluations of its model (``model.init_from``), on the configured workers, with
    no training: {"metrics": ..., "texts": ...}."""
    result = _trainer(config, task, evaluate_worker, Job(config, task), name=f"{config.run.name}-evaluate").fit()
    return result.return_value


def _fit(config: TrainConfig, task: TrainingTask, job: Job) -> Outcome:
    result = _trainer(config, task, train_worker, job, name=config.run.name).fit()
    returned = result.return_value or {}
    final = result.checkpoint
    if config.checkpoint.keep_best:  # the model to keep is the best one, not the last
        final = result.get_best_checkpoint(config.checkpoint.keep_best, config.checkpoint.best_mode()) or final
    if returned.get("history"):  # else a finished run, rerun: its model is there already
        _write_full_model(final, task)
    return Outcome(result=result, checkpoint=final, history=returned.get("history", []))


def _write_full_model(checkpoint: ray.train.Checkpoint, task: TrainingTask) -> None:
    """The run's model, whole, in the task's format, into its checkpoint's ``model/`` folder: the
    one unsharded copy, assembled once, here, from the workers' shards. (Every model reference to
    the run or the checkpoint finds it there: model/reference.py.)"""
    with torch.device("meta"):
        model = task.build_model(load_weights=False)
    parallel.materialize(model, torch.device("cpu"))
    with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory(prefix="webllm-model-") as scratch:
        load_full_model(model, Path(folder) / train_state.STATE_DIR)
        task.save_model(model.state_dict(), Path(scratch) / train_state.MODEL_DIR)
        destination = f"{checkpoint.path}/{train_state.MODEL_DIR}"
        checkpoint.filesystem.create_dir(destination, recursive=True)
        pyarrow.fs.copy_files(f"{scratch}/{train_state.MODEL_DIR}", destination,
                              source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=checkpoint.filesystem)


def _trainer(config: TrainConfig, task: TrainingTask, worker_function, job: Job, name: str) -> TorchTrainer:
    # Each worker streams its data with its own Ray Data executor: their progress bars would bury
    # the training progress line.
    ray.data.DataContext.get_current().enable_progress_bars = False
    return TorchTrainer(
        worker_function,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": config.scaling.cpus_per_worker}
            | ({"GPU": 1} if config.scaling.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=absolute(config.run.output),
            failure_config=ray.train.FailureConfig(max_failures=config.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.checkpoint.keep_last,
                checkpoint_score_attribute=config.checkpoint.keep_best,
                checkpoint_score_order=config.checkpoint.best_mode()),
            # Ray Train's own INFO lines repeat every report's metrics; the loop logs its progress.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=task.datasets(),
        dataset_config=task.dataset_config(),
    )


def _keep_final_model(outcome: Outcome, task: TrainingTask, config: TrainConfig) -> None:
    """Log the final model (see the module doc) and the task's exports, the loss curve; register the model."""
    checkpoint = outcome.checkpoint
    registered_name = config.tracking.registered_model
    with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory(prefix="webllm-export-") as scratch:
        model_dir = Path(folder) / train_state.MODEL_DIR
        if finetune_metadata(model_dir).get("kind") == "classifier":
            # A classifier scores texts: its checkpoint is the model, registered as it is.
            tracking.log_artifacts(str(model_dir), "checkpoint")
            if registered_name:
                outcome.registered_version = tracking.register_model("checkpoint", registered_name)
        else:
            # A generative model: the pyfunc that serves it holds the checkpoint, so it is stored once.
            outcome.registered_version = log_generative_model(model_dir, registered_name)
        for artifact_path, local_dir in task.exports(model_dir, Path(scratch)).items():
            tracking.log_artifacts(str(local_dir), artifact_path)
    curves = {"train": tracking.metric_history("loss"), "val": tracking.metric_history("val_loss")}
    tracking.log_figure(tracking.loss_curve_figure(curves), "loss_curve.png")
