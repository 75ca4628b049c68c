"""Classification fine-tuning as a ``TrainingTask`` (chapter 6 of the book): a GPT with a head on
the last real token, trained with cross-entropy on a labeled file.

    the file -> (balanced) deterministic train / val / test splits (model/finetune/splits.py)
    training: the loop of model/train.py, over ExampleBatches of the train split
    every eval: validation loss and accuracy, on the workers
    at the end (driver): accuracy, precision, recall, F1 and a confusion-matrix PNG for train, val
                         and test; with LoRA, a merged copy of the model
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from model import parallel
from model.evaluate import shard_evenly
from model.finetune.batches import Collate
from model.finetune.checkpoint import save_finetuned
from model.finetune.classifier import GPTClassifier
from model.finetune.labeled import TokenizedExample, classification_collate, read_labeled
from model.finetune.lora import merge_lora
from model.finetune.metrics import classification_metrics, confusion_figure, confusion_matrix
from model.finetune.splits import Splits, check_fractions, classification_splits
from model.finetune.task import FinetuneConfig, FinetuneTask
from model.gpt import GPT
from model.train import Batch, Evaluation, Worker
from pipeline import tracking
from pipeline.config import config_dataclass
from pipeline.corpus import corpus_path


@config_dataclass
class LabeledDataConfig:
    path: str | None = None  # TSV, CSV or JSONL; None: the shared corpus's finetune/SMSSpamCollection.tsv
    text_column: str = "text"
    label_column: str = "label"
    # Column names of a TSV/CSV without a header row (the SMS file's); null: the first row is the header.
    columns: list[str] | None = field(default_factory=lambda: ["label", "text"])
    # downsample: every class cut to the smallest one's size before splitting (the book's way);
    # class_weights: keep every example and weight the loss by inverse class frequency; none: neither.
    balance: Literal["downsample", "class_weights", "none"] = "downsample"
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])  # train, val, test
    split_seed: int = 123
    max_length: Annotated[int, Field(ge=2)] | None = None  # tokens kept per text; None: the context length

    def __post_init__(self) -> None:
        check_fractions(self.fractions)


@config_dataclass
class ClassifierEvalConfig:
    batch_size: Annotated[int, Field(ge=1)] = 32
    # Examples of each split in the final report, and of val in periodic evaluations (None: all).
    max_examples: Annotated[int, Field(ge=1)] | None = None


@config_dataclass
class ClassifierConfig(FinetuneConfig):
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    eval: ClassifierEvalConfig = field(default_factory=ClassifierEvalConfig)


class ClassifierTask(FinetuneTask):
    kind = "classifier"
    gpt_prefix = "gpt."

    def __init__(self, config: ClassifierConfig):
        path = Path(config.data.path) if config.data.path else corpus_path("finetune", "SMSSpamCollection.tsv")
        super().__init__(config, path)
        self.config: ClassifierConfig = config
        data = config.data
        self.examples, self.labels = read_labeled(self.data_path, data.text_column, data.label_column, data.columns)
        self.max_length = min(data.max_length or self.sequence_length, self.sequence_length)
        self.class_weights = self._class_weights()
        self.final_metrics: dict[str, float] = {}  # the driver's final report, for the job's summary

    def splits(self) -> Splits:
        data = self.config.data
        return classification_splits(self.examples, [example.label for example in self.examples], data.fractions,
                                     data.split_seed, balance=data.balance == "downsample")

    def metadata(self) -> dict[str, Any]:
        return {"labels": self.labels, "max_length": self.max_length}

    def wrap(self, gpt: GPT) -> nn.Module:
        return GPTClassifier(gpt, len(self.labels))

    def _tokenized(self, split: str) -> list[TokenizedExample]:
        encoding = self.encoding()
        examples = self.splits().named()[split]
        # An empty text still needs a last token to classify on: the end-of-text token.
        return [TokenizedExample(encoding.encode_ordinary(example.text)[: self.max_length] or [encoding.eot_token],
                                 example.label) for example in examples]

    def train_examples(self) -> list[TokenizedExample]:
        return self._tokenized("train")

    def train_collate(self) -> Collate:
        return partial(classification_collate, pad_token=self.encoding().eot_token)

    def _class_weights(self) -> torch.Tensor | None:
        """Inverse class frequency in the train split, 1 on average over its examples (class_weights only)."""
        if self.config.data.balance != "class_weights":
            return None
        counts = np.bincount([example.label for example in self.splits().train], minlength=len(self.labels))
        return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

    def prediction_count(self, batch: Batch) -> torch.Tensor:
        return torch.tensor(batch["labels"].numel())

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["lengths"])
        weights = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum", weight=weights)

    # -- evaluation --------------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, worker: Worker, step: int, final: bool) -> Evaluation:
        """Validation loss and metrics, each worker on its share of the val split."""
        inner = parallel.inner_module(model)
        inner.eval()
        examples = self._limited(self._tokenized("val"))
        share = shard_evenly(examples, worker.rank, worker.world_size)
        loss, matrix = self._confusion(inner, share, worker.device, worker.autocast)
        reduced = worker.all_reduce_sum([loss, *matrix.flatten().tolist()])
        matrix = np.array(reduced[1:]).reshape(matrix.shape)
        metrics = {"val_loss": reduced[0] / matrix.sum()}
        metrics.update({f"val_{name}": value for name, value in classification_metrics(matrix).items()})
        return Evaluation(metrics=metrics)

    def _limited(self, examples: list) -> list:
        limit = self.config.eval.max_examples
        return examples[:limit] if limit else examples

    @torch.no_grad()
    def _confusion(self, model: nn.Module, share: list[tuple[TokenizedExample, bool]], device: torch.device,
                   autocast) -> tuple[float, np.ndarray]:
        """(summed loss, confusion matrix) over the counted examples of ``share``."""
        size, pad = self.config.eval.batch_size, self.encoding().eot_token
        total, true, predicted = 0.0, [], []
        for start in range(0, len(share), size):
            chunk = share[start : start + size]
            counted = torch.tensor([counts for _, counts in chunk], device=device)
            batch = {name: tensor.to(device) for name, tensor in
                     classification_collate([example for example, _ in chunk], pad).items()}
            with autocast():
                logits = model(batch["input_ids"], batch["lengths"]).float()
            losses = F.cross_entropy(logits, batch["labels"], reduction="none")
            total += float((losses * counted).sum())
            true.append(batch["labels"][counted].cpu())
            predicted.append(logits.argmax(dim=-1)[counted].cpu())
        if not true:
            return total, np.zeros((len(self.labels),) * 2, dtype=np.int64)
        return total, confusion_matrix(torch.cat(true).numpy(), torch.cat(predicted).numpy(), len(self.labels))

    def final_report(self, model: nn.Module, device: torch.device) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Metrics and confusion matrices of every split, on one device."""
        metrics, matrices = {}, {}
        for split in ("train", "val", "test"):
            examples = [(example, True) for example in self._limited(self._tokenized(split))]
            loss, matrix = self._confusion(model, examples, device, nullcontext)
            matrices[split] = matrix
            metrics[f"{split}_loss"] = loss / max(matrix.sum(), 1)
            metrics.update({f"{split}_{name}": value for name, value in classification_metrics(matrix).items()})
        return metrics, matrices

    def exports(self, model_dir: Path, scratch: Path) -> dict[str, Path]:
        """On the driver, in the run: the final report (metrics, confusion-matrix PNGs) and, with LoRA,
        the model with its adapters merged."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = self.load_model(model_dir).to(device)
        metrics, matrices = self.final_report(model, device)
        self.final_metrics = metrics
        tracking.log_metrics(metrics, step=self.config.run.max_steps)
        report = scratch / "evaluation"
        report.mkdir()
        for split, matrix in matrices.items():
            figure = confusion_figure(matrix, self.labels, f"{split}: accuracy {metrics[f'{split}_accuracy']:.2%}")
            figure.savefig(report / f"confusion_{split}.png", dpi=100)
        (report / "metrics.json").write_text(json.dumps(
            {"labels": self.labels, "metrics": metrics,
             "confusion_matrices": {split: matrix.tolist() for split, matrix in matrices.items()}}, indent=2) + "\n")
        exported = {"evaluation": report}
        if self.config.trainable.lora.enabled:
            merge_lora(model.cpu())
            metadata = {"kind": self.kind, "lora": None, "merged_lora": self._lora_metadata(), **self.metadata()}
            save_finetuned(model.state_dict(), scratch / "merged", self.model_config, self.tokenizer, metadata,
                           self.gpt_prefix)
            exported["merged"] = scratch / "merged"
        return exported
