"""Our generative model as an MLflow ``pyfunc``: the serving engine behind ``mlflow models serve``
and ``mlflow.pyfunc.load_model``.

    input    a ``prompt`` column: a DataFrame, ``{"prompt": [...]}``, or REST ``{"inputs": {"prompt": [...]}}``
    params   max_tokens, temperature (0 is greedy), top_p, top_k, seed, stop: the API's meanings
    output   a DataFrame: completion, finish_reason, prompt_tokens, completion_tokens, error

The logged model carries everything it needs: the checkpoint, the tokenizer files (so it loads on a
machine without the corpus), the code of ``model/`` and ``pipeline/``, and pinned requirements.
Pretraining and fine-tuning log it and register it (``model/launch.py``), so
``mlflow models serve -m models:/<name>/<version> --env-manager local`` answers predictions, and
every job that takes a model reference accepts ``models:/<name>/<version>`` (``model/reference.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from model.checkpoint import tokenizer_of
from model.inference import TOKENIZER_DIR, load_inference_model
from model.reference import PYFUNC_WEIGHTS
from model.serve.complete import complete
from model.serve.engine import Engine, SamplingParams
from pipeline.tokenizer import load_tokenizer, save_tokenizer

ARTIFACT = PYFUNC_WEIGHTS.removeprefix("artifacts/")  # "checkpoint": where model/reference.py looks
PACKAGES = [Path(__file__).resolve().parents[2] / package for package in ("model", "pipeline")]
# What the model's code imports at inference; pinned to the versions it was logged with.
REQUIREMENTS = ("torch", "tiktoken", "safetensors", "numpy", "pandas", "pydantic", "pyyaml", "fsspec", "mlflow")

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string", "completion"), ColSpec("string", "finish_reason"),
                    ColSpec("long", "prompt_tokens"), ColSpec("long", "completion_tokens"),
                    ColSpec("string", "error", required=False)]),
    params=ParamSchema([
        ParamSpec("max_tokens", "long", 64),
        ParamSpec("temperature", "double", 1.0),
        ParamSpec("top_p", "double", None),
        ParamSpec("top_k", "long", None),
        ParamSpec("seed", "long", None),
        ParamSpec("stop", "string", [], shape=(-1,)),
    ]),
)


class GenerativeModel(mlflow.pyfunc.PythonModel):
    def __init__(self, max_batch_size: int = 16):
        self.max_batch_size = max_batch_size

    def load_context(self, context) -> None:
        self.served = load_inference_model(context.artifacts[ARTIFACT])
        self.engine = Engine(self.served.model, self.max_batch_size)
        self.lock = threading.Lock()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        prompts = _prompts(model_input["prompt"] if isinstance(model_input, pd.DataFrame) else model_input)
        try:
            sampling = SamplingParams(
                max_tokens=int(params.get("max_tokens") or 64),
                temperature=float(1.0 if params.get("temperature") is None else params["temperature"]),
                top_p=params.get("top_p"), top_k=params.get("top_k") or None,
                stop_token_ids=self.served.stop_token_ids)
        except ValueError as error:  # MLflow answers this one with 400, not 500
            raise MlflowException.invalid_parameter_value(str(error)) from None
        seed = params.get("seed")  # prompt i samples with seed + i, as choice i of an API request
        per_prompt = [sampling if seed is None else replace(sampling, seed=seed + index) for index in range(len(prompts))]
        with self.lock:  # one engine per model; a scoring server may call predict from several threads
            completions = complete(self.engine, self.served, prompts, per_prompt, stop=list(params.get("stop") or []))
        return pd.DataFrame({
            "completion": [c.text for c in completions], "finish_reason": [c.finish_reason for c in completions],
            "prompt_tokens": [c.prompt_tokens for c in completions],
            "completion_tokens": [c.completion_tokens for c in completions],
            "error": [c.error for c in completions],
        })


def _prompts(column) -> list[str]:
    """The prompts, one per row; a row holding a list (MLflow makes ``{"prompt": ["a", "b"]}``, the
    REST ``inputs`` form, one such row) gives each of its items."""
    prompts = []
    for cell in column:
        if isinstance(cell, (list, tuple, np.ndarray)):
            prompts.extend(str(item) for item in cell)
        else:
            prompts.append(str(cell))
    return prompts


def log_generative_model(model_dir: Path, registered_model_name: str | None = None) -> str | None:
    """Log the checkpoint in ``model_dir`` as a pyfunc named "model" of the active run, registered
    as a new version of ``registered_model_name`` if given; -> that version."""
    with tempfile.TemporaryDirectory(prefix="webllm-pyfunc-") as scratch:
        packaged = _with_tokenizer(model_dir, Path(scratch) / ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=GenerativeModel(), artifacts={ARTIFACT: str(packaged)},
            code_paths=[str(package) for package in PACKAGES], signature=SIGNATURE,
            pip_requirements=[f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS],
            registered_model_name=registered_model_name)
    return None if info.registered_model_version is None else str(info.registered_model_version)


def _with_tokenizer(model_dir: Path, target: Path) -> Path:
    """The checkpoint (hard links where the filesystem allows) with its tokenizer's files beside it."""
    shutil.copytree(model_dir, target, copy_function=_link_or_copy)
    save_tokenizer(load_tokenizer(tokenizer_of(model_dir)["spec"]), target / TOKENIZER_DIR)
    return target


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
