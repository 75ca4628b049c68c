"""What the two fine-tuning tasks share, on top of the training loop's ``TrainingTask`` protocol:

- the starting model (``model.init_from``, see ``model/finetune/base.py``) and what of it trains:
  everything, the last k blocks (with the final norm and any new head), or LoRA adapters;
- the examples, read on every worker from one small file and handed out by ``ExampleBatches``
  (no Ray Dataset: ``datasets()`` is empty);
- the checkpoint format (``model/finetune/checkpoint.py``) and the lineage params.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from model.finetune.base import BaseModelConfig, base_config, build_base
from model.finetune.batches import Collate, ExampleBatches
from model.finetune.checkpoint import load_finetuned_state, save_finetuned
from model.finetune.lineage import lineage_params
from model.finetune.splits import Splits
from model.finetune.lora import LoRAConfig, apply_lora, trainable_parameter_count
from model.gpt import GPT, count_parameters
from model.launch import DatasetInput
from model.train import Worker
from model.train_config import TrainConfig
from pipeline.config import ConfigError, config_dataclass
from pipeline.storage import absolute
from pipeline.tokenizer import load_tokenizer


@config_dataclass
class TrainableConfig:
    # Train only the last k transformer blocks and the final norm (plus the new head of a
    # classifier); None trains the whole model. Ignored with LoRA, which freezes the whole base.
    last_blocks: Annotated[int, Field(ge=0)] | None = None
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@config_dataclass
class FinetuneConfig(TrainConfig):
    model: BaseModelConfig = field(default_factory=BaseModelConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parallel.strategy == "pipeline":  # a fine-tune's model fits where its pretraining did
            raise ValueError("parallel.strategy: pipeline is for pretraining; fine-tune with ddp or fsdp")


class FinetuneTask(ABC):
    """The shared part of ``ClassifierTask`` and ``InstructTask``. A subclass says how to wrap the
    GPT (``wrap``), which examples train (``train_examples``) and how they batch (``train_collate``)."""

    kind: str  # "classifier" or "instruct", recorded in the checkpoint
    gpt_prefix: str = ""  # where the GPT's keys sit in the task model's state dict

    def __init__(self, config: FinetuneConfig, data_path: Path):
        if config.batch.global_batch_tokens is not None:
            raise ConfigError("batch.global_batch_tokens: fine-tuning batches hold whole examples of varying "
                              "length; give batch.global_batch_size (examples) instead")
        if config.model.init_from:
            config.model.init_from = absolute(config.model.init_from)
        self.config = config
        self.data_path = data_path.resolve()
        self.model_config, self.tokenizer = base_config(config.model)
        if config.trainable.last_blocks is not None and config.trainable.last_blocks > self.model_config.n_layers:
            raise ConfigError(f"trainable.last_blocks: {config.trainable.last_blocks}, but the model has "
                              f"{self.model_config.n_layers} blocks")
        self.sequence_length = self.model_config.context_length
        self._encoding = None

    # -- what a subclass provides ------------------------------------------------------------------

    def wrap(self, gpt: GPT) -> nn.Module:
        """The task's model around the GPT (the GPT itself by default)."""
        return gpt

    def freeze(self, model: nn.Module) -> None:
        """Without LoRA: of the GPT, only the last ``trainable.last_blocks`` blocks and the final norm
        stay trainable (all of it if None); anything the task added (a head) trains."""
        last_blocks = self.config.trainable.last_blocks
        if last_blocks is None:
            return
        gpt = self._gpt(model)
        for parameter in gpt.parameters():
            parameter.requires_grad_(False)
        for module in [*gpt.blocks[len(gpt.blocks) - last_blocks :], gpt.final_norm]:
            for parameter in module.parameters():
                parameter.requires_grad_(True)

    @abstractmethod
    def splits(self) -> Splits:
        """The examples, split into train / val / test."""

    @abstractmethod
    def train_examples(self) -> list[Any]:
        """The training split, tokenized."""

    @abstractmethod
    def train_collate(self) -> Collate:
        """Examples -> a micro-batch."""

    def metadata(self) -> dict[str, Any]:
        """What ``finetune.json`` records beside the kind and LoRA settings."""
        return {}

    # -- shared ------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoding": None}  # shipped to workers: each loads its own tokenizer

    def encoding(self):
        if self._encoding is None:  # loaded once per process, on the worker
            self._encoding = load_tokenizer(self.tokenizer["spec"])
        return self._encoding

    def build_model(self, load_weights: bool = True) -> nn.Module:
        model = self.wrap(build_base(self.config.model, self.model_config, load_weights))
        lora = self.config.trainable.lora
        if lora.enabled:
            apply_lora(self._gpt(model), lora)
            for name, parameter in model.named_parameters():  # a new head has no base weights to keep
                if not name.startswith(self.gpt_prefix):
                    parameter.requires_grad_(True)
        else:
            self.freeze(model)
        return model

    def _gpt(self, model: nn.Module) -> GPT:
        return model.get_submodule(self.gpt_prefix.rstrip(".")) if self.gpt_prefix else model

    def loads_weights(self) -> bool:
        return self.config.model.init_from is not None

    def datasets(self) -> dict[str, Any]:
        return {}

    def dataset_config(self) -> None:
        return None

    def train_batches(self, worker: Worker, micro_batch_size: int, state: dict[str, Any] | None) -> ExampleBatches:
        return ExampleBatches(self.train_examples(), self.train_collate(), micro_batch_size,
                              seed=self.config.run.seed, rank=worker.data_rank, world_size=worker.data_ranks,
                              state=state)

    def stream_metrics(self, batches: ExampleBatches) -> dict[str, float]:
        return {"epoch": batches.epochs_done()}

    def flops_per_token(self, model: nn.Module) -> None:
        return None  # examples vary in length; MFU is a pretraining figure

    def save_model(self, state: dict[str, torch.Tensor], directory: Path) -> None:
        metadata = {"kind": self.kind, "lora": self._lora_metadata(), **self.metadata()}
        save_finetuned(state, directory, self.model_config, self.tokenizer, metadata, self.gpt_prefix)

    def load_model(self, directory: Path) -> nn.Module:
        """The model a training checkpoint's ``model/`` folder holds, in eval mode on the CPU."""
        model = self.wrap(GPT(self.model_config))
        if self.config.trainable.lora.enabled:
            apply_lora(self._gpt(model), self.config.trainable.lora)
        model.load_state_dict(load_finetuned_state(directory, self.gpt_prefix)[0])
        return model.eval()

    def _lora_metadata(self) -> dict[str, Any] | None:
        lora = self.config.trainable.lora
        return {"rank": lora.rank, "alpha": lora.alpha, "targets": lora.targets} if lora.enabled else None

    def params(self) -> dict[str, Any]:
        model = self.build_model()
        return {
            **lineage_params(self.config.model),
            "model.parameters": count_parameters(model),
            "model.trainable_parameters": trainable_parameter_count(model),
            "model.config": self.model_config.to_dict(),
            "tokenizer": self.tokenizer,
        }

    def inputs(self) -> list[DatasetInput]:
        """The fine-tuning file as the run's dataset input: its path and content digest."""
        digest = hashlib.sha256(self.data_path.read_bytes()).hexdigest()
        manifest = {"path": str(self.data_path), "sha256": digest,
                    "splits": {name: len(examples) for name, examples in self.splits().named().items()}}
        return [DatasetInput(self.data_path.stem, str(self.data_path), manifest)]
