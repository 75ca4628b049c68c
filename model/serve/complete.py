"""Complete a list of prompts with the engine, without a server: the MLflow model and the Ray Data
batch job both call ``complete``, so they continue prompts exactly as the API does.

All prompts run together in the engine's continuous batch. Stop strings end a completion as they do
in the API (the engine request is cancelled at once). A prompt the model cannot serve (missing,
empty, longer than the context) does not fail the others: its completion has ``finish_reason``
"error", an ``error_code`` and a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.inference import InferenceModel
from model.serve.engine import Engine, RequestError, SamplingParams
from model.serve.text import TextStream


@dataclass
class Completion:
    text: str | None = None
    finish_reason: str | None = None  # "stop", "length" or "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_code: str | None = None
    error: str | None = None


def complete(engine: Engine, served: InferenceModel, prompts: Sequence[str | Sequence[int] | None],
             params: Sequence[SamplingParams], stop: Sequence[str] = ()) -> list[Completion]:
    """One completion per prompt (text, token ids, or None for a missing one), ``params[i]`` for prompt i."""
    completions = [Completion() for _ in prompts]
    streams: dict[int, TextStream] = {}
    for index, prompt in enumerate(prompts):
        completion = completions[index]
        try:
            if prompt is None:
                raise RequestError("missing_prompt", "prompt: missing (null)")
            tokens = served.encode(prompt) if isinstance(prompt, str) else list(prompt)
            completion.prompt_tokens = len(tokens)
            engine.add(index, tokens, params[index])
        except RequestError as error:
            completion.finish_reason, completion.error_code, completion.error = "error", error.code, str(error)
            continue
        completion.text = ""
        streams[index] = TextStream(served.encoding, stop)
    while engine.has_work():
        for event in engine.step():
            completion, stream = completions[event.request_id], streams[event.request_id]
            if completion.finish_reason is not None:  # ended by a stop string; this is its cancel
                continue
            if event.token is not None:
                completion.completion_tokens += 1
                completion.text += stream.push(event.token)
            if stream.stopped:
                completion.finish_reason = "stop"
                engine.cancel(event.request_id)
            elif event.finish_reason is not None:
                completion.text += stream.finish()
                completion.finish_reason = event.finish_reason
                if event.error is not None:
                    completion.error_code, completion.error = "engine_error", event.error
    return completions
