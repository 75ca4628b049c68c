"""A trained model ready to generate: weights from any reference, its tokenizer, its prompt template.

    reference (model/reference.py) -> the folder -> the GPT (LoRA adapters merged in)
                                                 -> the tokenizer it was trained with (checksum checked)
                                                 -> the instruction template it was tuned with, if any

``jobs/generate.py``, the server, the MLflow model and the batch job all load models here, so a
model behaves the same behind each of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from model.checkpoint import load_pretrained
from model.finetune.checkpoint import EXTRA_METADATA_FILE, EXTRA_WEIGHTS_FILE
from model.finetune.instructions import PromptTemplate
from model.finetune.lora import LoRAConfig, apply_lora, merge_lora
from model.gpt import GPT
from model.reference import resolve_model
from pipeline.tokenizer import load_tokenizer, tokenizer_identity

END_OF_TEXT = "<|endoftext|>"
# A folder that carries its own tokenizer (our MLflow model does) keeps it here, in the format
# pipeline.tokenizer.save_tokenizer writes.
TOKENIZER_DIR = "tokenizer"


@dataclass
class InferenceModel:
    model: GPT
    encoding: object  # tiktoken.Encoding
    template: PromptTemplate  # the instruction template; Alpaca's for a model never instruction-tuned
    folder: Path

    @property
    def end_of_text(self) -> int | None:
        return self.encoding.eot_token if END_OF_TEXT in self.encoding.special_tokens_set else None

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return () if self.end_of_text is None else (self.end_of_text,)

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """A prompt's tokens; an empty prompt starts a new document (GPT-2's convention). With
        ``special_tokens=False`` a text such as "<|endoftext|>" is plain text, as instruction tuning
        encoded it (a chat user cannot end the document)."""
        if special_tokens:
            tokens = self.encoding.encode(text, allowed_special="all")
        else:
            tokens = self.encoding.encode_ordinary(text)
        if not tokens and self.end_of_text is not None:
            tokens = [self.end_of_text]
        return tokens


def load_inference_model(reference: str, device: str | torch.device = "cpu",
                         dtype: torch.dtype | None = None) -> InferenceModel:
    """Raises FileNotFoundError for a reference that holds no model and ValueError for one that
    cannot generate (a classifier, a tokenizer that does not match)."""
    folder = resolve_model(reference)
    finetune = finetune_metadata(folder)
    if finetune.get("kind") == "classifier":
        raise ValueError(f"{reference}: a classifier (labels {finetune.get('labels')}); it scores texts, it does not "
                         "generate them")
    model, tokenizer = load_pretrained(folder)
    if finetune.get("lora"):
        model = _with_lora_merged(model, folder, finetune["lora"])
    template = PromptTemplate(**finetune["prompt_template"]) if finetune.get("prompt_template") else PromptTemplate()
    model = model.to(device=device, dtype=dtype).eval()
    return InferenceModel(model, _tokenizer(folder, tokenizer, model, reference), template, folder)


def finetune_metadata(folder: Path) -> dict:
    """What fine-tuning recorded in a checkpoint folder (its kind, LoRA, template); {} for a base model."""
    path = folder / EXTRA_METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _with_lora_merged(model: GPT, folder: Path, lora: dict) -> GPT:
    from safetensors.torch import load_file

    apply_lora(model, LoRAConfig(enabled=True, **lora))
    adapters = load_file(folder / EXTRA_WEIGHTS_FILE)
    model.load_state_dict({**model.state_dict(), **adapters})
    return merge_lora(model)


def _tokenizer(folder: Path, identity: dict, model: GPT, reference: str):
    carried = folder / TOKENIZER_DIR
    encoding = load_tokenizer(str(carried) if carried.is_dir() else identity["spec"])
    expected = identity.get("sha256")
    if expected is not None and tokenizer_identity(encoding)["sha256"] != expected:
        raise ValueError(f"tokenizer {identity['spec']!r} is not the one {reference} was trained with (sha256 differs)")
    if encoding.n_vocab > model.config.vocab_size:
        raise ValueError(f"tokenizer {identity['spec']!r} has {encoding.n_vocab} ids, the model only "
                         f"{model.config.vocab_size}")
    return encoding
