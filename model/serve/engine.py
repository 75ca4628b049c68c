"""The serving engine: continuous batching over one GPT, in plain PyTorch.

Requests join one running decode batch at token boundaries and leave it when they finish, so no
request waits for another to finish. Each ``step()`` does, in order:

    1. drop the sequences that were cancelled;
    2. prefill: the next chunk of at most ``prefill_tokens`` prompt tokens of the waiting requests
       (several short prompts together, or a long one over several steps), so that admitting a
       long prompt never stalls the running requests for more than one chunk;
       a group whose prompts are done gets its first token and joins the decode batch;
    3. decode: one token for every running sequence, each with its own sampling parameters,
       random generator and stop condition.

It returns what each request produced in that step. The engine is single-threaded and knows
nothing of HTTP, text or Ray: ``runner.py`` runs it on a thread for asyncio servers, and the
batch job and the MLflow model call ``run_to_completion``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from model.generate import left_pad, sample_next_token
from model.gpt import GPT, KVCache
from model.serve.decode_batch import DecodeBatch

MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 is greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None  # a seed makes the request's samples repeatable, alone or in any batch
    stop_token_ids: tuple[int, ...] = ()  # ends the request; the stop token itself is not returned
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: also the k most likely tokens

    def __post_init__(self) -> None:
        problems = {
            "max_tokens": self.max_tokens < 1 and "must be at least 1",
            "temperature": not (0 <= self.temperature and math.isfinite(self.temperature)) and "must be >= 0",
            "top_k": self.top_k is not None and self.top_k < 1 and "must be at least 1",
            "top_p": self.top_p is not None and not 0 < self.top_p <= 1 and "must be in (0, 1]",
            "logprobs": self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS
                        and f"must be between 0 and {MAX_LOGPROBS}",
        }
        for name, problem in problems.items():
            if problem:
                raise ValueError(f"{name}: {problem}, got {getattr(self, name)}")


class RequestError(ValueError):
    """A request the model cannot serve; ``code`` says why in one word (OpenAI's codes where they exist)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TokenEvent:
    """What one step produced for one request: a token, the end of the request, or both."""

    request_id: Hashable
    token: int | None  # None when the request ends without a new token (a stop token, a cancel)
    logprob: float | None = None  # log-probability of ``token`` under the model (before temperature)
    top_logprobs: tuple[tuple[int, float], ...] = ()
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None


@dataclass
class _Sequence:
    request_id: Hashable
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    generated: int = 0
    last_token: int = 0
    cancelled: bool = False

    @property
    def next_position(self) -> int:
        """The position of ``last_token``, the input of the next decode step."""
        return len(self.prompt) + self.generated - 1


@dataclass
class _Prefill:
    """A group of prompts, left-padded together, prefilled chunk by chunk into a cache of its own."""

    sequences: list[_Sequence]
    tokens: torch.Tensor
    positions: torch.Tensor
    padding_mask: torch.Tensor | None
    cache: KVCache
    chunk: int = field(default=0)

    @classmethod
    def of(cls, sequences: list[_Sequence], model: GPT, budget: int, device, dtype) -> _Prefill:
        tokens, mask = left_pad([sequence.prompt for sequence in sequences], device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = KVCache(model.config, len(sequences), tokens.shape[1], device, dtype)
        return cls(sequences, tokens, positions, None if mask.all() else mask, cache,
                   chunk=max(1, budget // len(sequences)))

    def run_chunk(self, model: GPT) -> torch.Tensor | None:
        """Prefill the next columns; -> the next-token logits of every prompt once all are in."""
        start = self.cache.length
        end = min(start + self.chunk, self.tokens.shape[1])
        mask = None if self.padding_mask is None else self.padding_mask[:, :end]
        hidden = model.hidden_states(self.tokens[:, start:end], position_ids=self.positions[:, start:end],
                                     attention_mask=mask, kv_cache=self.cache)
        return model.logits(hidden[:, -1]) if end == self.tokens.shape[1] else None


class Engine:
    def __init__(self, model: GPT, max_batch_size: int = 16, prefill_tokens: int = 512):
        if max_batch_size < 1 or prefill_tokens < 1:
            raise ValueError("max_batch_size and prefill_tokens must be at least 1")
        self.model = model.eval()
        self.config = model.config
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.max_batch_size = max_batch_size
        self.prefill_tokens = prefill_tokens
        self.waiting: deque[_Sequence] = deque()
        self.prefill: _Prefill | None = None
        self.batch = DecodeBatch(self.config, max_batch_size, self.device, self.dtype)
        self._known: dict[Hashable, _Sequence] = {}

    # -- requests ----------------------------------------------------------------------------------

    def check_request(self, prompt: Sequence[int], params: SamplingParams) -> None:
        """Raise ``RequestError``, naming the problem, for a request the model cannot serve."""
        if not prompt:
            raise RequestError("empty_prompt", "prompt: needs at least one token")
        vocab = self.config.vocab_size
        if any(not 0 <= token < vocab for token in prompt):
            raise RequestError("invalid_token", f"prompt: token ids must be in [0, {vocab})")
        if len(prompt) + params.max_tokens > self.config.context_length:
            raise RequestError(
                "context_length_exceeded",
                f"This model's maximum context length is {self.config.context_length} tokens. However, you "
                f"requested {len(prompt) + params.max_tokens} tokens ({len(prompt)} in the prompt, "
                f"{params.max_tokens} for the completion).")

    def add(self, request_id: Hashable, prompt: Sequence[int], params: SamplingParams) -> None:
        self.check_request(prompt, params)
        if request_id in self._known:
            raise ValueError(f"request {request_id!r} is already running")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(self.device).manual_seed(params.seed)
        sequence = _Sequence(request_id, list(prompt), params, generator)
        self._known[request_id] = sequence
        self.waiting.append(sequence)

    def cancel(self, request_id: Hashable) -> None:
        """Stop a request; its slot is free at the next step, which reports it as "cancelled"."""
        if request_id in self._known:
            self._known[request_id].cancelled = True

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefill or self.batch.size)

    @property
    def running(self) -> int:
        return self.batch.size

    # -- one step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        events: list[TokenEvent] = []
        try:
            self._drop_cancelled(events)
            self._prefill_step(events)
            if self.batch.size:
                self._decode_step(events)
        except Exception as error:  # noqa: BLE001 - every request in flight must hear of it
            events.extend(self._fail_all(f"{type(error).__name__}: {error}"))
        return events

    def run_to_completion(self, requests: Sequence[tuple[Hashable, Sequence[int], SamplingParams]]
                          ) -> dict[Hashable, list[TokenEvent]]:
        """Run ``requests`` (id, prompt, params) together until every one has finished."""
        for request_id, prompt, params in requests:
            self.add(request_id, prompt, params)
        results: dict[Hashable, list[TokenEvent]] = {request_id: [] for request_id, _, _ in requests}
        while self.has_work():
            for event in self.step():
                results[event.request_id].append(event)
        return results

    def _drop_cancelled(self, events: list[TokenEvent]) -> None:
        for sequence in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(sequence)
            events.append(self._finish(sequence, "cancelled"))
        if self.prefill and all(sequence.cancelled for sequence in self.prefill.sequences):
            events.extend(self._finish(sequence, "cancelled") for sequence in self.prefill.sequences)
            self.prefill = None
        for index in reversed(range(self.batch.size)):
            if self.batch.rows[index].cancelled:
                events.append(self._finish(self.batch.rows[index], "cancelled"))
                self.batch.remove(index)

    def _prefill_step(self, events: list[TokenEvent]) -> None:
        if self.prefill is None:
            group = self._next_group()
            if not group:
                return
            self.prefill = _Prefill.of(group, self.model, self.prefill_tokens, self.device, self.dtype)
        logits = self.prefill.run_chunk(self.model)
        if logits is None:
            return
        prefill, self.prefill = self.prefill, None
        joining, lengths, keep = [], [], []
        for row, (sequence, event) in enumerate(zip(prefill.sequences, self._choose(logits, prefill.sequences))):
            if sequence.cancelled:
                events.append(self._finish(sequence, "cancelled"))
                continue
            events.append(event)
            if event.finish_reason is None:
                joining.append(sequence)
                lengths.append(len(sequence.prompt))
                keep.append(row)
        if joining:
            if len(keep) < len(prefill.sequences):  # only the rows that go on
                prefill.cache.keys = prefill.cache.keys[:, keep]
                prefill.cache.values = prefill.cache.values[:, keep]
            self.batch.add(joining, lengths, prefill.cache)

    def _next_group(self) -> list[_Sequence]:
        """The waiting requests (in arrival order) to prefill together: as many as free rows allow,
        while the padded group stays within the chunk budget; a single long prompt goes alone."""
        free = self.max_batch_size - self.batch.size
        group: list[_Sequence] = []
        longest = 0
        while self.waiting and len(group) < free:
            candidate = max(longest, len(self.waiting[0].prompt))
            if group and (len(group) + 1) * candidate > self.prefill_tokens:
                break
            group.append(self.waiting.popleft())
            longest = candidate
        return group

    def _decode_step(self, events: list[TokenEvent]) -> None:
        batch = self.batch
        batch.make_room()
        rows = batch.rows
        input_ids = torch.tensor([[sequence.last_token] for sequence in rows], device=self.device)
        positions = torch.tensor([[sequence.next_position] for sequence in rows], device=self.device)
        hidden = self.model.hidden_states(input_ids, position_ids=positions, attention_mask=batch.attention_mask(),
                                          kv_cache=batch)
        finished = []
        for index, event in enumerate(self._choose(self.model.logits(hidden[:, -1]), rows)):
            events.append(event)
            if event.finish_reason is not None:
                finished.append(index)
        for index in reversed(finished):
            batch.remove(index)

    # -- sampling ------------------------------------------------------------------------------------

    def _choose(self, logits: torch.Tensor, sequences: list[_Sequence]) -> list[TokenEvent]:
        """The next token of each sequence, under its own parameters and generator."""
        tokens = logits.argmax(dim=-1).tolist()  # greedy rows (temperature 0) are done here
        for row, sequence in enumerate(sequences):
            params = sequence.params
            if params.temperature > 0:
                tokens[row] = int(sample_next_token(logits[row : row + 1], params.temperature, params.top_k,
                                                    params.top_p, sequence.generator)[0])
        wants_logprobs = [row for row, sequence in enumerate(sequences) if sequence.params.logprobs is not None]
        logprobs = {}
        if wants_logprobs:
            log_softmax = logits[wants_logprobs].float().log_softmax(dim=-1)
            for row, values in zip(wants_logprobs, log_softmax):
                top = sequences[row].params.logprobs
                best = values.topk(top) if top else None
                logprobs[row] = (float(values[tokens[row]]),
                                 tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ())
        return [self._emit(sequence, tokens[row], *logprobs.get(row, (None, ())))
                for row, sequence in enumerate(sequences)]

    def _emit(self, sequence: _Sequence, token: int, logprob: float | None,
              top_logprobs: tuple[tuple[int, float], ...]) -> TokenEvent:
        if token in sequence.params.stop_token_ids:
            return self._finish(sequence, "stop")
        sequence.generated += 1
        sequence.last_token = token
        finish_reason = "length" if sequence.generated >= sequence.params.max_tokens else None
        if finish_reason:
            del self._known[sequence.request_id]
        return TokenEvent(sequence.request_id, token, logprob, top_logprobs, finish_reason)

    def _finish(self, sequence: _Sequence, reason: str, error: str | None = None) -> TokenEvent:
        self._known.pop(sequence.request_id, None)
        return TokenEvent(sequence.request_id, None, finish_reason=reason, error=error)

    def _fail_all(self, message: str) -> list[TokenEvent]:
        """After an error inside a step the batch's state is unknown: end every request in flight.
        Waiting requests were not touched and stay."""
        in_flight = [*self.batch.rows, *(self.prefill.sequences if self.prefill else [])]
        self.batch.clear()
        self.prefill = None
        return [self._finish(sequence, "error", message) for sequence in in_flight]
