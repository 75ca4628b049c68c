"""The continuous-batching engine: requests join and leave one decode batch, and each comes out
exactly as it would alone (``model/generate.py`` is the reference)."""

from __future__ import annotations

import random

import pytest
import torch

from model.generate import generate
from model.serve.engine import Engine, SamplingParams
from tests.unit.test_generate import peaky_model


def random_requests(count: int, seed: int = 0, longest_prompt: int = 60, longest_output: int = 40):
    rng = random.Random(seed)
    return [([rng.randrange(500) for _ in range(rng.randint(1, longest_prompt))], rng.randint(1, longest_output))
            for _ in range(count)]


def run_staggered(engine: Engine, requests, params_of, arrive_every: int = 2) -> dict[int, list[int]]:
    """Add request i after ``i * arrive_every`` steps, step until all finish; -> tokens per request."""
    tokens: dict[int, list[int]] = {index: [] for index in range(len(requests))}
    pending = list(range(len(requests)))
    step = 0
    while pending or engine.has_work():
        while pending and pending[0] * arrive_every <= step:
            index = pending.pop(0)
            engine.add(index, requests[index][0], params_of(index))
        for event in engine.step():
            if event.token is not None:
                tokens[event.request_id].append(event.token)
        step += 1
    return tokens


@pytest.mark.parametrize("name", ["tiny", "llama-tiny"])
def test_greedy_output_is_identical_alone_and_in_a_batch_of_16(name):
    model = peaky_model(name)
    requests = random_requests(16)
    alone = [generate(model, [prompt], length, temperature=0)[0] for prompt, length in requests]
    # A small prefill budget: long prompts are prefilled over several steps while others decode.
    engine = Engine(model, max_batch_size=16, prefill_tokens=24)
    together = run_staggered(engine, requests, lambda i: SamplingParams(max_tokens=requests[i][1], temperature=0))
    assert [together[index] for index in range(16)] == alone


def test_long_runs_reuse_the_cache_columns_of_finished_requests():
    """Requests that together span far more than the context: the shared cache drops columns no
    row uses any more and never exceeds the context length."""
    model = peaky_model()  # context_length 128
    requests = random_requests(24, seed=3, longest_prompt=40, longest_output=80)
    alone = [generate(model, [prompt], length, temperature=0)[0] for prompt, length in requests]
    engine = Engine(model, max_batch_size=4, prefill_tokens=64)
    together = run_staggered(engine, requests, lambda i: SamplingParams(max_tokens=requests[i][1], temperature=0),
                             arrive_every=5)
    assert [together[index] for index in range(24)] == alone
    assert engine.batch.width <= model.config.context_length


def test_seeded_sampling_is_the_same_alone_and_in_a_batch():
    model = peaky_model()
    requests = random_requests(6, seed=1)

    def params(index: int) -> SamplingParams:
        return SamplingParams(max_tokens=requests[index][1], temperature=0.9, top_k=40, top_p=0.95, seed=100 + index)

    alone = {}
    for index, (prompt, _) in enumerate(requests):
        engine = Engine(model)
        alone[index] = run_staggered(engine, [(prompt, None)], lambda _: params(index))[0]
    together = run_staggered(Engine(model, max_batch_size=6), requests, params, arrive_every=1)
    assert together == alone


def test_no_running_request_waits_while_a_long_prompt_is_prefilled():
    model = peaky_model()
    engine = Engine(model, max_batch_size=4, prefill_tokens=8)
    engine.add("short", [1, 2, 3], SamplingParams(max_tokens=30, temperature=0))
    engine.step()  # prefilled, first token
    engine.add("long", list(range(100)), SamplingParams(max_tokens=5, temperature=0))
    steps_until_long_starts = 0
    while True:
        events = {event.request_id: event for event in engine.step()}
        assert events["short"].token is not None  # one token every step, prefill or not
        if "long" in events:
            break
        steps_until_long_starts += 1
    assert steps_until_long_starts == 100 // 8  # the 100-token prompt went in 8 tokens per step


def test_a_request_leaves_the_batch_at_its_stop_token_without_returning_it():
    model = peaky_model()
    prompt = [5, 17, 300]
    greedy = generate(model, [prompt], 10, temperature=0)[0]
    stop = greedy[4]
    engine = Engine(model)
    events = engine.run_to_completion([("r", prompt, SamplingParams(max_tokens=10, temperature=0,
                                                                    stop_token_ids=(stop,)))])["r"]
    tokens = [event.token for event in events if event.token is not None]
    assert tokens == greedy[: greedy.index(stop)]
    assert events[-1].finish_reason == "stop"
    assert not engine.has_work() and engine.running == 0


def test_max_tokens_ends_with_length_and_cancel_frees_the_slot():
    model = peaky_model()
    engine = Engine(model, max_batch_size=2)
    engine.add("a", [1, 2], SamplingParams(max_tokens=3, temperature=0))
    engine.add("b", [3, 4], SamplingParams(max_tokens=50, temperature=0))
    finished = {}
    for _ in range(4):
        for event in engine.step():
            if event.finish_reason:
                finished[event.request_id] = event.finish_reason
    assert finished == {"a": "length"}
    engine.cancel("b")
    assert [(event.request_id, event.finish_reason) for event in engine.step()] == [("b", "cancelled")]
    assert not engine.has_work()


def test_requests_beyond_the_batch_size_wait_for_a_free_row():
    model = peaky_model()
    engine = Engine(model, max_batch_size=2)
    for index in range(5):
        engine.add(index, [index + 1], SamplingParams(max_tokens=4, temperature=0))
    peak = 0
    while engine.has_work():
        engine.step()
        peak = max(peak, engine.running)
    assert peak == 2


def test_logprobs_are_those_of_the_full_forward_pass():
    model = peaky_model()
    prompt = [7, 8, 9, 10]
    engine = Engine(model)
    events = engine.run_to_completion([("r", prompt, SamplingParams(max_tokens=6, temperature=0, logprobs=3))])["r"]
    tokens = [event.token for event in events]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0][0, len(prompt) - 1 : -1]
    expected = logits.float().log_softmax(dim=-1)
    for position, event in enumerate(events):
        assert event.logprob == pytest.approx(float(expected[position, event.token]), abs=1e-4)
        top = expected[position].topk(3)
        assert [token for token, _ in event.top_logprobs] == top.indices.tolist()
        assert event.top_logprobs[0][0] == event.token  # greedy: the chosen token is the most likely


def test_requests_the_model_cannot_serve_are_refused_by_name():
    engine = Engine(peaky_model())  # context_length 128, vocabulary 512
    with pytest.raises(ValueError, match="maximum context length is 128"):
        engine.add("long", list(range(100)), SamplingParams(max_tokens=29))
    with pytest.raises(ValueError, match="token ids must be in"):
        engine.add("bad", [512], SamplingParams())
    with pytest.raises(ValueError, match="at least one token"):
        engine.add("empty", [], SamplingParams())
    for bad in ({"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": 0}, {"logprobs": 21}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)
    engine.add("ok", [1], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="already running"):
        engine.add("ok", [1], SamplingParams(max_tokens=2))


def test_an_error_inside_a_step_ends_the_requests_in_flight_and_the_engine_goes_on(monkeypatch):
    model = peaky_model()
    engine = Engine(model)
    engine.add("first", [1, 2], SamplingParams(max_tokens=5, temperature=0))
    engine.step()
    original = model.hidden_states

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "hidden_states", broken)
    [event] = engine.step()
    assert (event.request_id, event.finish_reason) == ("first", "error") and "out of memory" in event.error
    monkeypatch.setattr(model, "hidden_states", original)
    events = engine.run_to_completion([("second", [1, 2], SamplingParams(max_tokens=5, temperature=0))])["second"]
    assert [event.token for event in events] == generate(model, [[1, 2]], 5, temperature=0)[0]
