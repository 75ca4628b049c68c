"""The engine on its thread, driven from asyncio: concurrent streams, and leaving a stream early."""

from __future__ import annotations

import asyncio

import pytest

from model.generate import generate
from model.serve.engine import Engine, SamplingParams
from model.serve.runner import AsyncEngine
from tests.unit.test_generate import peaky_model


async def tokens_of(engine: AsyncEngine, prompt, params) -> tuple[list[int], str]:
    tokens, reason = [], None
    async for event in engine.stream(prompt, params):
        if event.token is not None:
            tokens.append(event.token)
        reason = event.finish_reason
    return tokens, reason


def test_concurrent_streams_each_get_their_own_continuation():
    model = peaky_model()
    prompts = [[1, 2, 3], [40, 41], [7] * 20, [300]]
    expected = [generate(model, [prompt], 12, temperature=0)[0] for prompt in prompts]
    engine = AsyncEngine(Engine(model, max_batch_size=4))

    async def main():
        return await asyncio.gather(*(tokens_of(engine, prompt, SamplingParams(max_tokens=12, temperature=0))
                                      for prompt in prompts))

    try:
        results = asyncio.run(main())
    finally:
        engine.stop()
    assert [tokens for tokens, _ in results] == expected
    assert {reason for _, reason in results} == {"length"}


def test_leaving_a_stream_early_cancels_the_request_in_the_engine():
    engine = AsyncEngine(Engine(peaky_model(), max_batch_size=2))

    async def main():
        stream = engine.stream([1, 2], SamplingParams(max_tokens=100, temperature=0))
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(200):  # the cancel reaches the engine thread at its next step
            if not engine.engine.has_work():
                return True
            await asyncio.sleep(0.01)
        return False

    try:
        assert asyncio.run(main())
    finally:
        engine.stop()


def test_a_request_the_model_cannot_serve_is_refused_before_it_is_queued():
    engine = AsyncEngine(Engine(peaky_model()))
    try:
        with pytest.raises(ValueError, match="maximum context length"):
            engine.submit(list(range(120)), SamplingParams(max_tokens=20), lambda event: None)
        assert engine.alive
    finally:
        engine.stop()
    assert not engine.alive
