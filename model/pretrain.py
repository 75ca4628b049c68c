"""Pretraining as a ``TrainingTask``: next-token prediction on the token shards of a dataset build.

The model comes from a preset (``model/config.py``), sized to the data: the tokenizer's vocabulary
and the shards' context length. Evaluations: validation loss on the fixed validation stream,
HellaSwag, and sample generations from configured prompts.
"""

from __future__ import annotations

from dataclasses import field, replace
from pathlib import Path
from typing import Annotated, Any

import ray.train
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from model import data, parallel
from model.checkpoint import export_hf_gpt2, load_checkpoint, load_pretrained, save_checkpoint
from model.config import GPTConfig, preset
from model.evaluate import (
    HellaSwagStyle,
    TokenBytes,
    load_hellaswag,
    loss_metrics,
    pad_with_repeats,
    sample_text,
    score_hellaswag,
    shard_evenly,
    validation_loss_sums,
)
from model.gpt import GPT, count_parameters, flops_per_token
from model.launch import DatasetInput
from model.reference import resolve_model
from model.train import Batch, Evaluation, ResumableBatches, Worker
from model.train_config import TrainConfig, global_batch_sequences
from pipeline.config import ConfigError, config_dataclass, validate
from pipeline.corpus import corpus_path
from pipeline.storage import absolute
from pipeline.tokenizer import load_tokenizer


@config_dataclass
class ModelConfig:
    preset: str = "tiny"
    # GPTConfig fields to change, e.g. {n_layers: 4, drop_rate: 0.1}. vocab_size and context_length
    # follow the data unless given here (and then they must fit it).
    overrides: dict[str, Any] = field(default_factory=dict)
    # Start from these weights instead of a random init: any model reference (model/reference.py: a
    # checkpoint, a run's folder, a Hugging Face GPT-2 folder, s3://..., models:/name/version). The
    # architecture is then the checkpoint's (``preset`` is not used); overrides
    # may still change what does not touch the weights, such as drop_rate.
    init_from: str | None = None


@config_dataclass
class HellaSwagConfig:
    enabled: bool = True
    # A JSONL file in HellaSwag's schema; None: the shared corpus's eval/hellaswag-val-1000.jsonl.
    path: str | None = None
    limit: Annotated[int, Field(ge=1)] | None = None  # the first N items (None: all); small on CPU
    # lm-eval: scored exactly as lm-evaluation-harness's hellaswag task (the figure papers report);
    # build-nanogpt: build-nanogpt's variant (raw ctx, acc_norm per token). See model/evaluate.py.
    style: HellaSwagStyle = "lm-eval"
    # Also score it at these multiples of run.eval_every_steps (None: only at the last step).
    every_evals: Annotated[int, Field(ge=1)] | None = None


@config_dataclass
class SamplesConfig:
    prompts: list[str] = field(default_factory=lambda: ["", "The meaning of life is"])
    max_new_tokens: Annotated[int, Field(ge=1)] = 48
    temperature: Annotated[float, Field(ge=0)] = 0.8
    top_k: Annotated[int, Field(ge=1)] | None = 50


@config_dataclass
class EvalConfig:
    val_batches: Annotated[int, Field(ge=1)] = 20  # micro-batches of validation per worker
    hellaswag: HellaSwagConfig = field(default_factory=HellaSwagConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)


@config_dataclass
class PretrainConfig(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: data.LoaderConfig = field(default_factory=data.LoaderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def with_absolute_paths(config: PretrainConfig) -> PretrainConfig:
    """Local paths made absolute from the current folder, so workers, whatever their own working
    folder, read the same files (URLs such as s3:// stay as they are)."""
    sources = [replace(source, path=absolute(source.path)) for source in config.data.sources]
    hellaswag = config.eval.hellaswag
    return replace(
        config,
        run=replace(config.run, output=absolute(config.run.output)),
        data=replace(config.data, sources=sources),
        model=replace(config.model, init_from=config.model.init_from and absolute(config.model.init_from)),
        checkpoint=replace(config.checkpoint,
                           resume_from=config.checkpoint.resume_from and absolute(config.checkpoint.resume_from)),
        eval=replace(config.eval, hellaswag=replace(hellaswag, path=hellaswag.path and absolute(hellaswag.path))),
    )


class PretrainTask:
    """Built on the driver from the config and the token manifest; loads its data on each worker."""

    def __init__(self, config: PretrainConfig):
        self.config = config
        self.manifest = data.read_token_manifest(config.data)
        self.tokenizer = {"spec": self.manifest["config"]["tokenizer"], **self.manifest["tokenizer"]}
        self.model_config = self._model_config()
        self.sequence_length = self.model_config.context_length
        self._hellaswag = None
        self._bytes_of_tokens = None

    def _model_config(self) -> GPTConfig:
        overrides = dict(self.config.model.overrides)
        if self.config.model.init_from:
            model, tokenizer = load_pretrained(resolve_model(self.config.model.init_from))
            if tokenizer.get("sha256", self.tokenizer["sha256"]) != self.tokenizer["sha256"]:
                raise ConfigError(f"model.init_from: {self.config.model.init_from} was trained with another "
                                  f"tokenizer than the data's {self.tokenizer['name']!r}")
            model_config = validate(GPTConfig, {**model.config.to_dict(), **overrides})
        else:
            data_shape = {"vocab_size": self.manifest["tokenizer"]["n_vocab"],
                          "context_length": self.manifest["context_length"]}
            model_config = preset(self.config.model.preset, **{**data_shape, **overrides})
        if model_config.vocab_size < self.manifest["tokenizer"]["n_vocab"]:
            raise ConfigError(f"model.overrides.vocab_size: {model_config.vocab_size} is smaller than the "
                              f"tokenizer's {self.manifest['tokenizer']['n_vocab']} ids")
        if model_config.context_length != self.manifest["context_length"]:
            raise ConfigError(f"model.overrides.context_length: {model_config.context_length}, but the token "
                              f"shards hold sequences of {self.manifest['context_length']}")
        return model_config

    # -- driver side -------------------------------------------------------------------------------

    def datasets(self) -> dict[str, Any]:
        stages = self.config.parallel.stages()
        return data.ray_datasets(self.config.data, self.config.run.seed, global_batch=self.global_batch(),
                                 steps=self.config.run.max_steps, data_ranks=self.config.scaling.num_workers // stages,
                                 stages=stages)

    def global_batch(self) -> int:
        """Sequences per optimizer step, all workers together."""
        return global_batch_sequences(self.config.batch, self.sequence_length)

    def dataset_config(self) -> ray.train.DataConfig:
        return data.dataset_config()

    def inputs(self) -> list[DatasetInput]:
        return [DatasetInput(name, source, manifest) for name, source, manifest in data.sources(self.config.data)]

    def params(self) -> dict[str, Any]:
        model = GPT(self.model_config)
        return {
            "model.parameters": count_parameters(model),
            "model.parameters_without_embeddings": count_parameters(model, include_embeddings=False),
            "model.flops_per_token": flops_per_token(model, self.sequence_length),
            "model.config": self.model_config.to_dict(),
            "tokenizer": self.tokenizer,
        }

    # -- worker side -------------------------------------------------------------------------------

    def build_model(self, load_weights: bool = True) -> nn.Module:
        model = GPT(self.model_config)
        if load_weights and self.config.model.init_from:
            pretrained, _ = load_pretrained(resolve_model(self.config.model.init_from))
            model.load_state_dict(pretrained.state_dict())
        return model

    def loads_weights(self) -> bool:
        return self.config.model.init_from is not None

    def train_batches(self, worker: Worker, micro_batch_size: int, state: dict[str, Any] | None) -> ResumableBatches:
        return data.train_batches(self.config.data, micro_batch_size, state, seed=self.config.run.seed,
                                  global_batch=self.global_batch(), steps=self.config.run.max_steps,
                                  rank=worker.data_rank, ranks=worker.data_ranks)

    def stream_metrics(self, batches: data.TrainBatches) -> dict[str, float]:
        if len(self.config.data.sources) == 1:
            return {}
        return {f"tokens.{name}": tokens for name, tokens in batches.tokens_per_source().items()}

    def prediction_count(self, batch: Batch) -> torch.Tensor:
        return (batch["targets"] != data.IGNORE_INDEX).sum()

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, _ = model(batch["input_ids"])
        return self.loss_from_logits(logits, batch["targets"])

    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss summed over the targets; what a pipeline's last stage computes from its logits."""
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=data.IGNORE_INDEX,
                               reduction="sum")

    def flops_per_token(self, model: nn.Module) -> int:
        return flops_per_token(model, self.sequence_length)

    def evaluate(self, model: nn.Module, worker: Worker, step: int, final: bool) -> Evaluation:
        inner = parallel.inner_module(model)
        inner.eval()
        evaluation = Evaluation(metrics=self._validation_loss(inner, worker))
        hellaswag = self.config.eval.hellaswag
        evals_done = step // self.config.run.eval_every_steps
        if hellaswag.enabled and (final or (hellaswag.every_evals and evals_done % hellaswag.every_evals == 0)):
            evaluation.metrics.update(self._hellaswag_accuracy(inner, worker))
        if self.config.eval.samples.prompts:
            evaluation.texts[f"samples/step-{step:08d}.txt"] = self._samples(model, worker, step)
        return evaluation

    def _validation_loss(self, model: nn.Module, worker: Worker) -> dict[str, float]:
        batches = list(data.validation_batches(self.config.data, self.config.batch.micro_batch_size,
                                               self.config.eval.val_batches))
        batches = pad_with_repeats(batches, worker.all_reduce_max(len(batches)))
        sums = validation_loss_sums(model, batches, self.loss_sum, self.prediction_count, worker.device,
                                    worker.autocast(), self._token_bytes())
        return loss_metrics(*worker.all_reduce_sum(list(sums)))

    def _hellaswag_accuracy(self, model: nn.Module, worker: Worker) -> dict[str, float]:
        items = shard_evenly(self._hellaswag_items(), worker.rank, worker.world_size)
        counts = score_hellaswag(model, items, worker.device, worker.autocast())
        counts.items, counts.correct, counts.correct_norm = worker.all_reduce_sum(
            [counts.items, counts.correct, counts.correct_norm])
        return counts.metrics()

    def _samples(self, model: nn.Module, worker: Worker, step: int) -> str:
        samples = self.config.eval.samples
        with parallel.gathered(model) as generator, worker.autocast():
            return sample_text(generator, self._encoding(), samples.prompts, samples.max_new_tokens,
                               samples.temperature, samples.top_k, seed=self.config.run.seed + step)

    def _encoding(self):
        return load_tokenizer(self.tokenizer["spec"])

    def _token_bytes(self) -> TokenBytes:
        if self._bytes_of_tokens is None:  # built once per worker
            self._bytes_of_tokens = TokenBytes(self._encoding(), data.IGNORE_INDEX)
        return self._bytes_of_tokens

    def _hellaswag_items(self):
        if self._hellaswag is None:  # tokenized once per worker
            hellaswag = self.config.eval.hellaswag
            path = hellaswag.path or corpus_path("eval", "hellaswag-val-1000.jsonl")
            self._hellaswag = load_hellaswag(path, self._encoding(), hellaswag.limit, hellaswag.style)
        return self._hellaswag

    def save_model(self, state: dict[str, torch.Tensor], directory: Path) -> None:
        model = GPT(self.model_config)
        model.load_state_dict(state)
        save_checkpoint(model, directory, self.tokenizer)

    def exports(self, model_dir: Path, scratch: Path) -> dict[str, Path]:
        """The Hugging Face GPT-2 layout, for GPT-2-architecture models."""
        model, _ = load_checkpoint(model_dir)
        try:
            export_hf_gpt2(model, scratch / "hf", eos_token_id=self._encoding().eot_token)
        except ValueError as reason:  # a Llama-style model has no GPT-2 layout
            print(f"no Hugging Face export: {reason}")
            return {}
        return {"hf": scratch / "hf"}
