"""What a language model is measured by while it trains, and afterwards (``jobs/evaluate.py``).

- Validation loss: mean next-token cross-entropy over a fixed stream of held-out sequences, and the
  same in bits per byte (``val_bpb``): the summed nats over ln 2 times the UTF-8 bytes the scored
  target tokens decode to, a figure that does not depend on the tokenizer (nanochat, modded-nanogpt).
- HellaSwag (Zellers et al. 2019): pick which of four endings continues a context. Each ending is
  scored by the model's log-likelihood of its tokens given the context: ``acc`` picks the likeliest,
  ``acc_norm`` the likeliest per unit of length, so long endings are not penalised for being long.
  By default exactly as lm-evaluation-harness's ``hellaswag`` task, the number papers report: the
  context is ``activity_label: ctx_a Ctx_b``, context and endings cleaned of WikiHow's bracket
  artefacts, each ending tokenized as the tail of ``context + " " + ending``, and ``acc_norm``
  divides by the ending's length in characters. ``style: build-nanogpt`` keeps build-nanogpt's
  variant: the raw ``ctx``, each ending tokenized alone, ``acc_norm`` per token.
- Samples: continuations of fixed prompts, to read what the model has learned.

Every function works on one worker's share and returns sums, so a distributed caller adds the
shares of all workers (``shard_evenly`` gives every worker the same number of forward passes, which
FSDP needs: its forward passes are collective).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from model.generate import generate

T = TypeVar("T")


HellaSwagStyle = Literal["lm-eval", "build-nanogpt"]


@dataclass(frozen=True)
class HellaSwagItem:
    context: list[int]
    endings: list[list[int]]  # four, each starting with the space that separates it from the context
    label: int
    # What acc_norm divides each ending's log-likelihood by: its characters (lm-eval) or, when not
    # given, its tokens (build-nanogpt).
    lengths: tuple[float, ...] | None = None


@dataclass
class HellaSwagCounts:
    items: float = 0.0
    correct: float = 0.0  # highest total log-likelihood is the right ending
    correct_norm: float = 0.0  # highest log-likelihood per token is the right ending

    def metrics(self) -> dict[str, float]:
        if not self.items:
            return {}
        return {"hellaswag_acc": self.correct / self.items, "hellaswag_acc_norm": self.correct_norm / self.items}


def load_hellaswag(path: str | Path, encoding, limit: int | None = None,
                   style: HellaSwagStyle = "lm-eval") -> list[HellaSwagItem]:
    """The first ``limit`` items of a HellaSwag JSONL file in its original schema (``activity_label``,
    ``ctx_a``, ``ctx_b``, ``ctx``, ``endings``, ``label``), tokenized as ``style`` says (module doc)."""
    items = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(items) >= limit:
                break
            if line.strip():
                record = json.loads(line)
                items.append(_lm_eval_item(record, encoding) if style == "lm-eval" else _nanogpt_item(record, encoding))
    return items


def hellaswag_query(record: dict) -> tuple[str, list[str]]:
    """lm-eval's context and endings of an item: ``activity_label: ctx_a Ctx_b`` and each ending,
    all cleaned of the WikiHow part's ``[title]``/``[header]`` artefacts."""
    context = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    return _clean(record["activity_label"] + ": " + context), [_clean(ending) for ending in record["endings"]]


def _clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _lm_eval_item(record: dict, encoding) -> HellaSwagItem:
    query, endings = hellaswag_query(record)
    context = encoding.encode_ordinary(query)
    # As lm-eval's loglikelihood requests: the continuation is " " + ending, tokenized as the tail of
    # the whole text, so its tokens are those the model reads after the context.
    tails = [encoding.encode_ordinary(query + " " + ending)[len(context):] for ending in endings]
    return HellaSwagItem(context, tails, int(record["label"]), tuple(float(len(ending)) for ending in endings))


def _nanogpt_item(record: dict, encoding) -> HellaSwagItem:
    return HellaSwagItem(context=encoding.encode_ordinary(record["ctx"]),
                         endings=[encoding.encode_ordinary(" " + ending) for ending in record["endings"]],
                         label=int(record["label"]))


def shard_evenly(items: Sequence[T], rank: int, world_size: int) -> list[tuple[T, bool]]:
    """Every ``world_size``-th item from ``rank``, as (item, counts) pairs. Workers whose share is one
    short repeat an item that does not count, so all of them run the same number of forward passes."""
    per_worker = -(-len(items) // world_size)
    return [
        (items[index % len(items)], index < len(items))
        for index in range(rank, per_worker * world_size, world_size)
    ]


@torch.no_grad()
def score_hellaswag(
    model: nn.Module,
    items: Iterable[tuple[HellaSwagItem, bool]],
    device: torch.device,
    autocast: AbstractContextManager | None = None,
) -> HellaSwagCounts:
    """One forward pass per item: its four context + ending rows, right-padded to the longest."""
    counts = HellaSwagCounts()
    context_length = model.config.context_length
    for item, counted in items:
        rows = [(item.context + ending)[-context_length:] for ending in item.endings]
        ending_lengths = [min(len(ending), len(row) - 1) for ending, row in zip(item.endings, rows)]
        width = max(len(row) for row in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        scored = torch.zeros(len(rows), width, dtype=torch.bool)  # which positions are ending tokens
        for i, (row, n_ending) in enumerate(zip(rows, ending_lengths)):
            tokens[i, : len(row)] = torch.tensor(row)
            scored[i, len(row) - n_ending : len(row)] = True
        tokens, scored = tokens.to(device), scored.to(device)
        with autocast or nullcontext():
            logits, _ = model(tokens)
        # Position t predicts token t + 1: the log-likelihood of each ending token given all before it.
        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        token_ll = log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1) * scored[:, 1:]
        total = token_ll.sum(dim=1)
        lengths = (torch.tensor(item.lengths, device=device) if item.lengths is not None
                   else scored[:, 1:].sum(dim=1))
        normalised = total / lengths
        if counted:
            counts.items += 1
            counts.correct += float(total.argmax().item() == item.label)
            counts.correct_norm += float(normalised.argmax().item() == item.label)
    return counts


def pad_with_repeats(items: Sequence[T], length: int) -> list[tuple[T, bool]]:
    """``items`` as (item, counts) pairs, made up to ``length`` with repeats of the last that do not
    count: the workers of an FSDP model must all run as many forward passes."""
    if len(items) < length and not items:
        raise RuntimeError("this worker has nothing to evaluate while others do: give every worker at least one item")
    return [(item, True) for item in items] + [(items[-1], False)] * (length - len(items))


class TokenBytes:
    """How many UTF-8 bytes each token id decodes to: 0 for special tokens such as <|endoftext|>,
    which mark document boundaries and are no text. The sum over a sequence's tokens is exactly the
    length of its text, for byte-level BPE."""

    def __init__(self, encoding, ignore_index: int = -100):
        lengths = [0 if token in encoding._special_tokens.values() else len(encoding.decode_single_token_bytes(token))
                   for token in range(encoding.n_vocab)]
        self.lengths = torch.tensor(lengths, dtype=torch.int64)
        self.ignore_index = ignore_index

    def __call__(self, targets: torch.Tensor) -> float:
        """The bytes of the scored targets (those not ``ignore_index``)."""
        scored = targets[targets != self.ignore_index].cpu()
        return float(self.lengths[scored].sum())


def bits_per_byte(nats: float, text_bytes: float) -> float:
    return nats / (math.log(2) * text_bytes)


@torch.no_grad()
def validation_loss_sums(
    model: nn.Module,
    batches: Iterable[tuple[dict[str, torch.Tensor], bool]],
    loss_sum: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    prediction_count: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    device: torch.device,
    autocast: AbstractContextManager | None = None,
    token_bytes: TokenBytes | None = None,
) -> tuple[float, float, float]:
    """(summed loss, number of predictions, bytes of the predicted targets) over the counted
    ``batches``, by the task's loss; bytes are 0 without ``token_bytes``."""
    total, count, text_bytes = 0.0, 0.0, 0.0
    for batch, counted in batches:
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        with autocast or nullcontext():
            batch_sum = loss_sum(model, batch)
        if counted:
            total += float(batch_sum)
            count += float(prediction_count(batch))
            if token_bytes is not None:
                text_bytes += token_bytes(batch["targets"])
    return total, count, text_bytes


def loss_metrics(total: float, count: float, text_bytes: float) -> dict[str, float]:
    """``val_loss`` (nats per token) and ``val_bpb`` from summed figures."""
    metrics = {"val_loss": total / count} if count else {}
    if text_bytes:
        metrics["val_bpb"] = bits_per_byte(total, text_bytes)
    return metrics


def sample_text(
    model: nn.Module,
    encoding,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
) -> str:
    """Each prompt and its continuation, separated by rules: the text logged as samples."""
    prompt_tokens = [encoding.encode_ordinary(prompt) or [encoding.eot_token] for prompt in prompts]
    continuations = generate(
        model,
        prompt_tokens,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        stop_token=encoding.eot_token,
        seed=seed,
    )
    return "\n\n".join(
        f"--- {prompt!r}\n{prompt}{encoding.decode(tokens)}" for prompt, tokens in zip(prompts, continuations)
    )
