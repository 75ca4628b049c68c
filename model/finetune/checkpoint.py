"""Fine-tuned models on disk: our checkpoint format for the GPT, plus what fine-tuning added.

    model.safetensors, model.json   the GPT (base weights; with LoRA, not yet merged): any GPT
                                    checkpoint reader (jobs/generate.py) loads it as it is
    finetune.safetensors            the added tensors: a classification head, LoRA's A and B
    finetune.json                   what they are: {"kind", "labels", "lora": {...} or null, ...}

``finetune.json`` is written last: a folder that has one is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import GPTConfig
from model.gpt import GPT

EXTRA_WEIGHTS_FILE = "finetune.safetensors"
EXTRA_METADATA_FILE = "finetune.json"


def save_finetuned(
    state: dict[str, torch.Tensor],
    directory: Path,
    gpt_config: GPTConfig,
    tokenizer: dict[str, Any],
    metadata: dict[str, Any],
    gpt_prefix: str = "",
) -> None:
    """Write a fine-tuned model's full state: keys of the GPT (under ``gpt_prefix``) as our
    checkpoint, every other key as an added tensor."""
    gpt = GPT(gpt_config)
    gpt_keys = {gpt_prefix + key for key in gpt.state_dict()}
    gpt.load_state_dict({key.removeprefix(gpt_prefix): value for key, value in state.items() if key in gpt_keys})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXTRA_METADATA_FILE).unlink(missing_ok=True)
    save_checkpoint(gpt, directory, tokenizer)
    extra = {key: value.detach().contiguous().cpu() for key, value in state.items() if key not in gpt_keys}
    save_file(extra, directory / EXTRA_WEIGHTS_FILE)
    (directory / EXTRA_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def load_finetuned_state(directory: Path, gpt_prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (the full state as ``save_finetuned`` got it, the fine-tune metadata)."""
    gpt, _ = load_checkpoint(directory)
    state = {gpt_prefix + key: value for key, value in gpt.state_dict().items()}
    state.update(load_file(directory / EXTRA_WEIGHTS_FILE))
    return state, json.loads((directory / EXTRA_METADATA_FILE).read_text())
