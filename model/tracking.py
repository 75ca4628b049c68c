"""The one place that talks to MLflow.

Locally, runs go to a SQLite file (``./mlflow.db``) with artifacts beside it (``./mlartifacts``).
``MLFLOW_TRACKING_URI`` points every job at a shared server instead; nothing else changes.
"""

from __future__ import annotations

import os
import tempfile
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
def run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    use_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as active:
        yield active


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


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="webllm-mlflow-")
