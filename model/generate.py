"""Autoregressive sampling: prefill the prompts once, then one token per step from a KV cache.

Prompts of different lengths share a batch by left padding: every row ends at the same slot, so
each step appends one column for all rows. Padding is masked out of attention and each row counts
its positions from its own first real token, so a prompt continues exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.gpt import GPT, KVCache


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, vocab) logits of the next token -> (B,) chosen ids. Temperature 0 is greedy decoding."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:  # keep the k most likely tokens
        kth_largest = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None:  # nucleus (Holtzman et al. 2019): the fewest tokens holding top_p of the mass
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # the most likely token always stays
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` tokens; return only the new ones.

    A row stops at ``stop_token`` (which is not returned). Prompts longer than the context leaves
    room for are cut from the left. ``use_cache=False`` re-runs the whole sequence every step: the
    slow reference that the cached path must match.
    """
    _check_options(prompts, max_new_tokens, temperature, top_k, top_p)
    room = model.config.context_length - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                         f"context_length={model.config.context_length}")
    prompts = [list(prompt)[-room:] for prompt in prompts]
    parameter = next(model.parameters())
    device = parameter.device
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None

    tokens, padding_mask = left_pad(prompts, device)
    # Each row's positions start at 0 on its first real token; padding slots get 0 (never seen).
    positions = (padding_mask.cumsum(dim=1) - 1).clamp(min=0)
    attention_mask = padding_mask if not padding_mask.all() else None  # no padding: the fast causal path
    batch_size, prompt_slots = tokens.shape
    cache_length = prompt_slots + max_new_tokens
    cache = KVCache(model.config, batch_size, cache_length, device, parameter.dtype) if use_cache else None
    step_input, step_positions = tokens, positions  # the prefill: the whole prompt at once
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    new_tokens = []

    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        for _ in range(max_new_tokens):
            if not use_cache:  # the reference: the whole sequence so far, every step
                step_input, step_positions = tokens, positions
            hidden = model.hidden_states(
                step_input, position_ids=step_positions, attention_mask=attention_mask, kv_cache=cache
            )
            next_token = sample_next_token(model.logits(hidden[:, -1]), temperature, top_k, top_p, generator)
            new_tokens.append(next_token)
            if stop_token is not None:
                finished |= next_token == stop_token
                if finished.all():
                    break
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch_size, 1)], dim=1)
            step_input, step_positions = next_token[:, None], positions[:, -1:]
    finally:
        model.train(was_training)

    return [_until_stop(row, stop_token) for row in torch.stack(new_tokens, dim=1).tolist()]


def left_pad(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (B, L) token ids with padding on the left, and the (B, L) mask, 1 on real tokens."""
    longest = max(len(prompt) for prompt in prompts)
    tokens = torch.zeros(len(prompts), longest, dtype=torch.long)  # id 0 at padding: valid, and masked out
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt) :] = 1
    return tokens.to(device), mask.to(device)


def _until_stop(row: list[int], stop_token: int | None) -> list[int]:
    return row[: row.index(stop_token)] if stop_token in row else row


def _check_options(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> None:
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
