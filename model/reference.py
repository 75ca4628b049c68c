"""Where a model lives: a reference -> the local folder that holds its weights.

A reference is one of

- a folder holding a model: our checkpoint (``model.json``), a Hugging Face GPT-2 folder
  (``config.json``), or an MLflow model (``MLmodel``: our logged pyfunc, whose weights sit in
  ``artifacts/checkpoint``);
- a training checkpoint (``checkpoint-00000080/``): its ``model/`` folder;
- a training run's folder (``data/runs/pretrain-demo/``): its latest training checkpoint;
- any of these on an object store (``s3://bucket/runs/pretrain-gpt2-124m``, ``gs://...``): the
  folder is found there and only it is downloaded, once, into a local cache;
- an MLflow URI (``models:/webllm-demo/3``, ``models:/webllm-demo@champion``, ``runs:/<id>/...``):
  downloaded from the tracking server that ``MLFLOW_TRACKING_URI`` names.

Every job that takes a model (fine-tuning's ``init_from``, generation, evaluation, serving, batch
inference) resolves it here, so each accepts all of them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import fsspec

from model.train_state import MODEL_DIR
from pipeline.storage import is_local

CHECKPOINT_FILE = "model.json"  # our checkpoint format (model/checkpoint.py)
HF_FILE = "config.json"  # a Hugging Face folder
MLFLOW_MODEL_FILE = "MLmodel"
PYFUNC_WEIGHTS = "artifacts/checkpoint"  # where our MLflow model keeps our checkpoint
_TRAINING_CHECKPOINT = re.compile(r"checkpoint-\d+")
_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_IMMUTABLE = re.compile(r"models:/[^/@]+/\d+/?$|runs:/")


def resolve_model(reference: str, cache_dir: str | Path | None = None) -> Path:
    """The local folder holding the weights ``reference`` names; FileNotFoundError if none."""
    reference = str(reference)
    if reference.startswith(_MLFLOW_SCHEMES):
        return Path(_model_folder(fsspec.filesystem("file"), _download_mlflow(reference, cache_dir), reference))
    filesystem, path = fsspec.core.url_to_fs(reference)
    folder = _model_folder(filesystem, path.rstrip("/"), reference)
    if is_local(filesystem):
        return Path(folder)
    return _download_folder(filesystem, folder, reference, cache_dir)


def model_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where downloaded models are kept: ``cache_dir``, ``$WEBLLM_MODEL_CACHE``, or the temp folder."""
    return Path(cache_dir or os.environ.get("WEBLLM_MODEL_CACHE") or Path(tempfile.gettempdir()) / "webllm-models")


def _model_folder(filesystem, path: str, reference: str) -> str:
    if filesystem.exists(f"{path}/{CHECKPOINT_FILE}") or filesystem.exists(f"{path}/{HF_FILE}"):
        return path
    if filesystem.exists(f"{path}/{MLFLOW_MODEL_FILE}") and filesystem.exists(f"{path}/{PYFUNC_WEIGHTS}/{CHECKPOINT_FILE}"):
        return f"{path}/{PYFUNC_WEIGHTS}"
    if filesystem.exists(f"{path}/{MODEL_DIR}/{CHECKPOINT_FILE}"):
        return f"{path}/{MODEL_DIR}"
    if filesystem.isdir(path):
        checkpoints = sorted(
            child.rstrip("/") for child in filesystem.ls(path, detail=False)
            if _TRAINING_CHECKPOINT.fullmatch(child.rstrip("/").rsplit("/", 1)[-1])
            and filesystem.exists(f"{child.rstrip('/')}/{MODEL_DIR}/{CHECKPOINT_FILE}")
        )
        if checkpoints:
            return f"{checkpoints[-1]}/{MODEL_DIR}"
    raise FileNotFoundError(
        f"{reference}: holds no model: neither a checkpoint (ours: {CHECKPOINT_FILE}, Hugging Face: {HF_FILE}), "
        f"an MLflow model ({MLFLOW_MODEL_FILE}), a training checkpoint nor a training run's folder holding any"
    )


def _cache_folder(key: str, cache_dir: str | Path | None) -> Path:
    return model_cache_dir(cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]


def _download_folder(filesystem, folder: str, reference: str, cache_dir: str | Path | None) -> Path:
    """Download ``folder`` once: into a staging name, renamed when complete, so a reader never
    sees half a model; a later call finds it in the cache."""
    protocol = filesystem.protocol[0] if isinstance(filesystem.protocol, tuple) else filesystem.protocol
    target = _cache_folder(f"{protocol}://{folder}", cache_dir)
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_ensure(target.parent)))
        filesystem.get(f"{folder}/", str(staging), recursive=True)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same download first
            pass
    return target


def _download_mlflow(reference: str, cache_dir: str | Path | None) -> str:
    """A registered version or a run's artifact never changes, so it is downloaded once; an alias
    or "latest" can move, so it is downloaded afresh."""
    import mlflow

    from pipeline.tracking import tracking_uri

    # The registry lookup goes through the process's global URIs, not an argument's.
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    target = _cache_folder(f"{tracking_uri()}|{reference}", cache_dir)
    if target.is_dir() and _IMMUTABLE.match(reference):
        return str(target)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_ensure(target.parent)))
    downloaded = mlflow.artifacts.download_artifacts(reference, dst_path=str(staging))
    if not _IMMUTABLE.match(reference):
        return downloaded
    try:
        Path(downloaded).rename(target)
    except OSError:  # another process finished the same download first
        pass
    return str(target)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
