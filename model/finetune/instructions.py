"""Instruction data (Alpaca format: ``instruction``, ``input``, ``output``) -> training batches,
as in chapter 7 of the book.

Each example becomes prompt + response tokens, followed by one end-of-text token. A batch is padded
to its longest example with end-of-text tokens; inputs are the tokens, targets the tokens shifted
by one. In the targets, everything after each example's first end-of-text token is padding and
gets the ignore index, so the model learns to stop but no loss is spent on padding. Optionally the
prompt's tokens are masked too, so only the response is learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.config import config_dataclass

IGNORE_INDEX = -100  # cross_entropy's default ignore_index


@config_dataclass
class PromptTemplate:
    """The Alpaca prompt the book uses; ``input`` is left out when an example's input is empty."""

    instruction: str = ("Below is an instruction that describes a task. Write a response that appropriately "
                        "completes the request.\n\n### Instruction:\n{instruction}")
    input: str = "\n\n### Input:\n{input}"
    response: str = "\n\n### Response:\n"

    def prompt(self, entry: dict[str, Any]) -> str:
        text = self.instruction.format(instruction=entry["instruction"])
        if entry.get("input"):
            text += self.input.format(input=entry["input"])
        return text + self.response


@dataclass(frozen=True)
class InstructionExample:
    tokens: list[int]  # prompt and response, without the end-of-text token
    prompt_length: int  # how many of them are the prompt's


def tokenize_example(entry: dict[str, Any], template: PromptTemplate, encoding) -> InstructionExample:
    prompt = encoding.encode_ordinary(template.prompt(entry))
    return InstructionExample(prompt + encoding.encode_ordinary(entry["output"]), len(prompt))


def instruction_collate(
    examples: list[InstructionExample],
    end_of_text: int,
    mask_prompt: bool = False,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """-> input_ids and targets, (B, T) with T the longest example plus its end-of-text token, cut to
    ``max_length``. Targets ignore the padding after each row's end-of-text token and, with
    ``mask_prompt``, the predictions of prompt tokens (the first target is the prompt's second token)."""
    longest = max(len(example.tokens) for example in examples) + 1
    padded = torch.full((len(examples), longest), end_of_text, dtype=torch.long)
    for row, example in enumerate(examples):
        padded[row, : len(example.tokens)] = torch.tensor(example.tokens, dtype=torch.long)
    input_ids, targets = padded[:, :-1], padded[:, 1:].clone()
    for row, example in enumerate(examples):
        targets[row, len(example.tokens) :] = IGNORE_INDEX  # target len-1 is the end-of-text token: kept
        if mask_prompt:
            targets[row, : example.prompt_length - 1] = IGNORE_INDEX
    if max_length is not None:
        input_ids, targets = input_ids[:, :max_length], targets[:, :max_length]
    return {"input_ids": input_ids.contiguous(), "targets": targets.contiguous()}
