"""The one place that talks to MLflow.

Locally, runs go to a SQLite file (``./mlflow.db``) with artifacts beside it (``./mlartifacts``).
``MLFLOW_TRACKING_URI`` points every job at a shared server instead; nothing else changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow

from pipeline.config import flatten

DATASET_EXPERIMENT = "dataset-builds"
# MLflow rejects longer param values; configs with long lists are cut, the full config is an artifact.
MAX_PARAM_LENGTH = 6000


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def use_experiment(name: str) -> str:
    """Point MLflow at the tracking URI and the named experiment (created if new); return its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Keep artifacts next to the SQLite file, not wherever the process happens to run.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


@contextmanager
def run(experiment: str, run_name: str, tags: dict[str, str] | None = None,
        run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A new run, or the run ``run_id`` continued."""
    experiment_id = use_experiment(experiment)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as active:
            yield active
        return
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as active:
        yield active


def find_run(
    experiment: str | None, tags: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> str | None:
    """The id of the newest run carrying all of ``tags`` and ``params``, in ``experiment`` (None: in any), or None."""
    client = mlflow.MlflowClient(tracking_uri())
    if experiment is None:
        experiment_ids = [found.experiment_id for found in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        experiment_ids = [found.experiment_id] if found else []
    if not experiment_ids:
        return None
    conditions = [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    conditions += [f"params.`{key}` = '{value}'" for key, value in (params or {}).items()]
    runs = client.search_runs(
        experiment_ids, " and ".join(conditions), order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_config(config: dict[str, Any]) -> None:
    """The effective config: flattened as params, and whole as ``config.json``."""
    params = {key: _param_value(value) for key, value in flatten(config).items()}
    mlflow.log_params(params)
    mlflow.log_dict(config, "config.json")


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def log_dict(data: dict[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(data, artifact_file)


def log_figure(figure, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_artifacts(local_dir: str, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(local_dir, artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def funnel_figure(stages: list[tuple[str, int]]):
    """A bar chart of the documents remaining after each stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in stages]
    remaining = [count for _, count in stages]
    figure, axes = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    bars = axes.bar(names, remaining, color="#4c72b0")
    axes.bar_label(bars, labels=[f"{n:,}" for n in remaining], fontsize=8)
    axes.set_ylabel("documents remaining")
    axes.set_title("Dataset build funnel")
    axes.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    return figure



# ---------------------------------------------------------------------------------------------
# Training runs: the driver creates the run before ``fit()``; rank 0 logs into it by id, so a
# worker restarted after a failure continues the same run.

TRAINING_EXPERIMENT = "pretraining"


class RunLogger:
    """Logs into an existing run by id, from any process (a Ray Train worker): no active-run state."""

    def __init__(self, tracking_uri_: str, run_id: str):
        self.client = mlflow.MlflowClient(tracking_uri_)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(key, _param_value(value)) for key, value in params.items()])


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params({key: _param_value(value) for key, value in params.items()})


def log_dataset(manifest: dict[str, Any], source: str, name: str, context: str = "training") -> str:
    """Record the dataset a run reads as an MLflow input: where it is, and a digest of its manifest
    (which lists every shard's sha256), so a reviewer can go from the run to the exact data. The
    manifest itself is logged too. Returns the digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digest = manifest_digest(manifest)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": local paths, harmless
        warnings.simplefilter("ignore")
        dataset = MetaDataset(resolve_dataset_source(source), name=name, digest=digest[:36])
    mlflow.log_input(dataset, context=context, tags={"manifest_sha256": digest})
    mlflow.log_dict(manifest, f"datasets/{name}/manifest.json")
    return digest


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def register_model(artifact_path: str, name: str) -> str:
    """Register a folder of the active run's artifacts as a new version of model ``name``; returns the version.

    The source is the artifact folder itself (our checkpoint format), so
    ``mlflow.artifacts.download_artifacts("models:/<name>/<version>")`` gives back a folder that
    ``jobs/generate.py --checkpoint`` reads.
    """
    client = mlflow.MlflowClient()
    run = mlflow.active_run()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run.info.run_id
    )
    return version.version


def metric_history(key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric of the active run, by step; the last value logged for a step wins
    (a restarted worker logs again the steps since its checkpoint)."""
    client = mlflow.MlflowClient()
    by_step = {}
    for metric in sorted(client.get_metric_history(active_run_id(), key), key=lambda m: m.timestamp):
        by_step[metric.step] = metric.value
    return sorted(by_step.items())


def loss_curve_figure(curves: dict[str, list[tuple[int, float]]]):
    """Loss against step, one line per named curve (train, val)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=name, marker="o" if len(points) < 30 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Loss curve")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def git_commit() -> str:
    """The repository's commit (with ``-dirty`` if files changed), or "unknown" outside a checkout,
    such as the copy of the working dir that ``ray job submit`` runs from."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
