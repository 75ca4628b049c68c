"""The model a fine-tune starts from, and where it came from.

``model.init_from`` names one of:

- our checkpoint folder (``model.json`` + ``model.safetensors``);
- a training checkpoint (``checkpoint-00000080/``, whose ``model/`` is the above);
- a training run's folder (``data/runs/pretrain-demo/``): its latest training checkpoint;
- a Hugging Face GPT-2 folder (``config.json`` + ``model.safetensors``), imported by ``model/checkpoint.py``;
- any of these on an object store, or a registered MLflow model (``models:/name/version``): see
  ``model/reference.py``.

Without ``init_from`` the model is a random init of ``preset`` (the ablation that shows what
pretraining adds), sized to the configured tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import field
from pathlib import Path
from typing import Any

from model.checkpoint import load_pretrained
from model.config import GPTConfig, preset
from model.gpt import GPT
from model.reference import resolve_model
from pipeline.config import ConfigError, config_dataclass, validate
from pipeline.tokenizer import load_tokenizer, tokenizer_identity

_TRAINING_CHECKPOINT = re.compile(r"checkpoint-\d+")
WEIGHTLESS_FIELDS = {"drop_rate"}


@config_dataclass
class BaseModelConfig:
    init_from: str | None = None  # see the module doc; None: a random init of ``preset``
    preset: str = "tiny"  # random init only; vocab_size follows the tokenizer
    tokenizer: str = "gpt2"  # random init only (a checkpoint names its own tokenizer)
    # GPTConfig fields to change: for a random init any field; with ``init_from`` only those that do
    # not touch the weights (drop_rate).
    overrides: dict[str, Any] = field(default_factory=dict)
    # The MLflow run that produced ``init_from``, for the lineage params. None: looked up in MLflow
    # by the training run that wrote the checkpoint (its run.output and run.name), if any.
    mlflow_run_id: str | None = None


def resolve_checkpoint(path: str) -> Path:
    """The local folder holding the weights that ``path`` names (any reference of ``model/reference.py``)."""
    try:
        return resolve_model(path)
    except FileNotFoundError as error:
        raise ConfigError(f"model.init_from: {error}") from None


def base_config(config: BaseModelConfig) -> tuple[GPTConfig, dict[str, Any]]:
    """-> (the architecture, the tokenizer identity with its ``spec``), without loading weights twice."""
    if config.init_from:
        touching = sorted(set(config.overrides) - WEIGHTLESS_FIELDS)
        if touching:
            raise ConfigError(f"model.overrides: {touching} would change the weights of model.init_from; only "
                              f"{sorted(WEIGHTLESS_FIELDS)} can change")
        model, tokenizer = load_pretrained(resolve_checkpoint(config.init_from))
        return validate(GPTConfig, {**model.config.to_dict(), **config.overrides}, "model.overrides"), tokenizer
    encoding = load_tokenizer(config.tokenizer)
    model_config = preset(config.preset, **{"vocab_size": encoding.n_vocab, **config.overrides})
    return model_config, {"spec": config.tokenizer, **tokenizer_identity(encoding)}


def build_base(config: BaseModelConfig, model_config: GPTConfig, load_weights: bool = True) -> GPT:
    """The starting model on the CPU: the checkpoint's weights (if ``load_weights``), or a random
    init (seeded by the caller)."""
    model = GPT(model_config)
    if load_weights and config.init_from:
        pretrained, _ = load_pretrained(resolve_checkpoint(config.init_from))
        model.load_state_dict(pretrained.state_dict())
    return model


def training_run_of(checkpoint: Path) -> tuple[str, str] | None:
    """(run.output, run.name) of the training run that wrote ``checkpoint`` (``<output>/<name>/
    checkpoint-N/model``), or None for a folder that is not inside a training run."""
    parts = checkpoint.resolve().parts
    for index in range(len(parts) - 1, 1, -1):
        if _TRAINING_CHECKPOINT.fullmatch(parts[index]):
            return str(Path(*parts[: index - 1])), parts[index - 1]
    return None
