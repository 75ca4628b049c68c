"""Instruction fine-tuning as a ``TrainingTask`` (chapter 7 of the book): next-token prediction on
Alpaca-format examples put in a prompt template.

    the JSON file -> train / val / test in file order, 85 / 5 / 10 (model/finetune/splits.py)
    training: the loop of model/train.py over ExampleBatches of the train split; the loss covers the
              response and end-of-text tokens, and the prompt's unless ``data.mask_prompt``
    every eval: validation loss on response tokens only (the prompt masked whatever the training does)
    at the end (driver): greedy responses to the test split, saved as JSON beside the references and,
              if a judge endpoint is configured, scored 0-100; with LoRA, the merged model
"""

from __future__ import annotations

import json
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from model import parallel
from model.evaluate import TokenBytes, loss_metrics, pad_with_repeats, shard_evenly, validation_loss_sums
from model.finetune import judge
from model.finetune.batches import Collate
from model.finetune.checkpoint import save_finetuned
from model.finetune.instructions import (
    IGNORE_INDEX,
    InstructionExample,
    PromptTemplate,
    instruction_collate,
    tokenize_example,
)
from model.finetune.lora import merge_lora
from model.finetune.splits import Splits, check_fractions, instruction_splits
from model.finetune.task import FinetuneConfig, FinetuneTask
from model.generate import generate
from model.train import Batch, Evaluation, Worker
from pipeline import tracking
from pipeline.config import config_dataclass, to_dict
from pipeline.corpus import corpus_path



@config_dataclass
class InstructionDataConfig:
    path: str | None = None  # Alpaca-format JSON; None: the shared corpus's finetune/instruction-data.json
    fractions: list[float] = field(default_factory=lambda: [0.85, 0.05, 0.10])  # train, val, test
    template: PromptTemplate = field(default_factory=PromptTemplate)
    mask_prompt: bool = False  # learn the response only (the book's exercise 7.2); off in the book's main run

    def __post_init__(self) -> None:
        check_fractions(self.fractions)


@config_dataclass
class InstructEvalConfig:
    batch_size: Annotated[int, Field(ge=1)] = 8
    val_examples: Annotated[int, Field(ge=1)] | None = None  # the first N of the val split; None: all
    test_examples: Annotated[int, Field(ge=1)] | None = None  # responses to the first N test examples; None: all
    max_new_tokens: Annotated[int, Field(ge=1)] = 256
    judge: judge.JudgeConfig = field(default_factory=judge.JudgeConfig)


@config_dataclass
class InstructConfig(FinetuneConfig):
    data: InstructionDataConfig = field(default_factory=InstructionDataConfig)
    eval: InstructEvalConfig = field(default_factory=InstructEvalConfig)


class InstructTask(FinetuneTask):
    kind = "instruct"

    def __init__(self, config: InstructConfig):
        path = Path(config.data.path) if config.data.path else corpus_path("finetune", "instruction-data.json")
        super().__init__(config, path)
        self.config: InstructConfig = config
        self.entries: list[dict[str, Any]] = json.loads(self.data_path.read_text(encoding="utf-8"))
        self.final_metrics: dict[str, float] = {}  # the driver's final report, for the job's summary
        self.responses: list[dict[str, Any]] = []

    def metadata(self) -> dict[str, Any]:
        """The prompt template goes into the checkpoint: a server formats chat messages with it."""
        return {"prompt_template": to_dict(self.config.data.template)}

    def splits(self) -> Splits:
        return instruction_splits(self.entries, self.config.data.fractions)

    def _tokenized(self, entries: list[dict[str, Any]]) -> list[InstructionExample]:
        return [tokenize_example(entry, self.config.data.template, self.encoding()) for entry in entries]

    def train_examples(self) -> list[InstructionExample]:
        return self._tokenized(self.splits().train)

    def train_collate(self) -> Collate:
        return partial(instruction_collate, end_of_text=self.encoding().eot_token,
                       mask_prompt=self.config.data.mask_prompt, max_length=self.sequence_length)

    def prediction_count(self, batch: Batch) -> torch.Tensor:
        return (batch["targets"] != IGNORE_INDEX).sum()

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, _ = model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")

    def evaluate(self, model: nn.Module, worker: Worker, step: int, final: bool) -> Evaluation:
        """Validation loss (and bits per byte) on response tokens, each worker on its share of the val split."""
        inner = parallel.inner_module(model)
        inner.eval()
        val = self.splits().val[: self.config.eval.val_examples]
        mine = [example for example, counted in shard_evenly(self._tokenized(val), worker.rank, worker.world_size)
                if counted]
        size = self.config.eval.batch_size
        collate = partial(instruction_collate, end_of_text=self.encoding().eot_token, mask_prompt=True,
                          max_length=self.sequence_length)
        batches = [collate(mine[start : start + size]) for start in range(0, len(mine), size)]
        batches = pad_with_repeats(batches, worker.all_reduce_max(len(batches)))
        sums = validation_loss_sums(inner, batches, self.loss_sum, self.prediction_count, worker.device,
                                    worker.autocast(), TokenBytes(self.encoding(), IGNORE_INDEX))
        return Evaluation(metrics=loss_metrics(*worker.all_reduce_sum(list(sums))))

    def respond(self, model: nn.Module, entries: list[dict[str, Any]]) -> list[str]:
        """Greedy responses of ``model`` (a plain GPT) to the entries' prompts, up to end-of-text."""
        encoding, size = self.encoding(), self.config.eval.batch_size
        max_new_tokens = min(self.config.eval.max_new_tokens, self.sequence_length - 1)
        prompts = [encoding.encode_ordinary(self.config.data.template.prompt(entry)) for entry in entries]
        responses = []
        for start in range(0, len(prompts), size):
            generated = generate(model, prompts[start : start + size], max_new_tokens, temperature=0.0,
                                 stop_token=encoding.eot_token)
            responses.extend(encoding.decode(tokens).strip() for tokens in generated)
        return responses

    def exports(self, model_dir: Path, scratch: Path) -> dict[str, Path]:
        """On the driver, in the run: the test split's responses beside the references (scored if a
        judge is configured) and, with LoRA, the merged model, which ``jobs/generate.py`` reads."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = merge_lora(self.load_model(model_dir)).to(device)
        test = self.splits().test[: self.config.eval.test_examples]
        self.responses = [{**entry, "model_response": response}
                          for entry, response in zip(test, self.respond(model, test))]
        judge_config = self.config.eval.judge
        if judge_config.url:
            template = self.config.data.template
            for entry in self.responses:
                entry["score"] = judge.score(judge_config, template.prompt(entry), entry["output"],
                                             entry["model_response"])
            scores = [entry["score"] for entry in self.responses if entry["score"] is not None]
            self.final_metrics = {"test_judge_score": sum(scores) / len(scores) if scores else 0.0,
                                  "test_judge_scored": float(len(scores))}
            tracking.log_metrics(self.final_metrics, step=self.config.run.max_steps)
        else:
            print("no judge endpoint configured (eval.judge.url): scoring of the test responses skipped")
        folder = scratch / "responses"
        folder.mkdir()
        (folder / "test_responses.json").write_text(json.dumps(self.responses, indent=2, ensure_ascii=False) + "\n")
        exported = {"responses": folder}
        if self.config.trainable.lora.enabled:
            metadata = {"kind": self.kind, "lora": None, "merged_lora": self._lora_metadata(), **self.metadata()}
            save_finetuned(model.cpu().state_dict(), scratch / "merged", self.model_config, self.tokenizer, metadata)
            exported["merged"] = scratch / "merged"
        return exported
