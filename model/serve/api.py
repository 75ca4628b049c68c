"""The OpenAI-compatible HTTP API over the engine, as a FastAPI app (Ray Serve wraps it in ``app.py``).

    GET  /                      the chat page (chat.html), which streams from /v1/chat/completions
    GET  /health                200 while the engine thread runs
    GET  /v1/models             the one model this app serves
    POST /v1/completions        text or token-id prompts; n, stop, logprobs, streaming
    POST /v1/chat/completions   messages in the model's instruction template; n, stop, logprobs, streaming

Each choice is one engine request; a request with several prompts or ``n`` > 1 runs them all at once
in the running batch. Errors are OpenAI's error JSON: 400 for a bad request (the parameter named),
401 for a missing or wrong API key when one is configured, 404 for an unknown model or route,
500 if the engine fails; the app keeps serving after any of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.inference import InferenceModel
from model.serve.engine import RequestError, SamplingParams, TokenEvent
from model.serve.protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from model.serve.runner import AsyncEngine
from model.serve.text import TextStream, chat_prompt, token_text


@dataclass
class Choice:
    """One choice's progress: its text and tokens so far, and how it ended."""

    index: int
    prompt_tokens: int
    text: str = ""
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass(frozen=True)
class Delta:
    index: int
    text: str
    events: list[TokenEvent]  # the tokens that produced ``text`` (their logprobs)
    finish_reason: str | None


@dataclass(frozen=True)
class Job:
    """What a request asks for: one (prompt tokens, params) per choice."""

    choices: list[tuple[list[int], SamplingParams]]
    prompt_tokens: int  # counted once per prompt, as OpenAI counts them, not once per choice
    stop: list[str]


def build_openai_app(served: InferenceModel, engine: AsyncEngine, model_name: str,
                     api_key_sha256: str | None = None) -> FastAPI:
    app = FastAPI(title="webllm", docs_url=None, redoc_url=None)
    api = APIRouter(prefix="/v1", dependencies=[Depends(_api_key_check(api_key_sha256))])
    context_length = served.model.config.context_length

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, error: OpenAIError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error_response(OpenAIError(error.status_code, str(error.detail), code=_HTTP_CODES.get(error.status_code)))

    @app.exception_handler(Exception)
    async def server_error(_: Request, error: Exception) -> JSONResponse:
        return _error_response(OpenAIError(500, f"{type(error).__name__}: {error}", kind="server_error"))

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> str:
        page = resources.files("model.serve").joinpath("chat.html").read_text(encoding="utf-8")
        return (page.replace("{{MODEL_JSON}}", json.dumps(model_name)).replace("{{MODEL}}", html.escape(model_name))
                .replace("{{NEEDS_KEY}}", "true" if api_key_sha256 else "false"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        if not engine.alive:
            raise OpenAIError(503, "the engine thread has stopped", kind="server_error")
        return {"status": "ok", "model": model_name, "running": engine.engine.running}

    model_card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "webllm",
                  "context_length": context_length}

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card]}

    @api.get("/models/{model}")
    async def get_model(model: str) -> dict[str, Any]:
        _check_model(model, model_name)
        return model_card

    @api.post("/completions")
    async def completions(request: Request):
        body = await _parse(request, CompletionRequest)
        _check_model(body.model, model_name)
        prompts = [served.encode(prompt) if isinstance(prompt, str) else prompt for prompt in body.prompts()]
        job = _job(engine, body, prompts, context_length, served.stop_token_ids, logprobs=body.logprobs,
                   prompt_param="prompt")
        response_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: Delta) -> dict[str, Any]:
            return {"id": response_id, "object": "text_completion", "created": created, "model": model_name,
                    "choices": [{"index": delta.index, "text": delta.text, "finish_reason": delta.finish_reason,
                                 "logprobs": _completion_logprobs(served, delta.events, body.logprobs)}]}

        if body.stream:
            return _sse(_stream(engine, served, job, body, chunk, response_id, created, model_name, "text_completion"))
        choices = await _collect(engine, served, job)
        return {"id": response_id, "object": "text_completion", "created": created, "model": model_name,
                "choices": [{"index": choice.index, "text": choice.text, "finish_reason": choice.finish_reason,
                             "logprobs": _completion_logprobs(served, choice.events, body.logprobs)}
                            for choice in choices],
                "usage": _usage(job, choices)}

    @api.post("/chat/completions")
    async def chat_completions(request: Request):
        body = await _parse(request, ChatCompletionRequest)
        _check_model(body.model, model_name)
        messages = [{"role": message.role, "content": message.text()} for message in body.messages]
        prompt = served.encode(chat_prompt(messages, served.template), special_tokens=False)
        top = (body.top_logprobs or 0) if body.logprobs else None
        job = _job(engine, body, [prompt], context_length, served.stop_token_ids, logprobs=top,
                   prompt_param="messages", limit=body.completion_limit())
        response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        started: set[int] = set()

        def chunk(delta: Delta) -> dict[str, Any]:
            message: dict[str, Any] = {} if delta.finish_reason and not delta.text else {"content": delta.text}
            if delta.index not in started:  # each choice's first chunk names the role
                started.add(delta.index)
                message = {"role": "assistant", **message}
            return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                    "choices": [{"index": delta.index, "delta": message, "finish_reason": delta.finish_reason,
                                 "logprobs": _chat_logprobs(served, delta.events, top)}]}

        if body.stream:
            return _sse(_stream(engine, served, job, body, chunk, response_id, created, model_name,
                                "chat.completion.chunk"))
        choices = await _collect(engine, served, job)
        return {"id": response_id, "object": "chat.completion", "created": created, "model": model_name,
                "choices": [{"index": choice.index, "message": {"role": "assistant", "content": choice.text},
                             "finish_reason": choice.finish_reason,
                             "logprobs": _chat_logprobs(served, choice.events, top)} for choice in choices],
                "usage": _usage(job, choices)}

    app.include_router(api)
    return app


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _api_key_check(api_key_sha256: str | None) -> Callable:
    """Only a hash of the key is kept, so the key itself is in no config, argument or log."""

    async def check(authorization: str | None = Header(default=None)) -> None:
        if api_key_sha256 is None:
            return
        scheme, _, key = (authorization or "").partition(" ")
        given = hashlib.sha256(key.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, api_key_sha256):
            raise OpenAIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                              code="invalid_api_key")

    return check


def _check_model(model: str, served_name: str) -> None:
    if model != served_name:
        raise OpenAIError(404, f"The model `{model}` does not exist; this server serves `{served_name}`.",
                          param="model", code="model_not_found")


async def _parse(request: Request, schema: type[BaseModel]) -> Any:
    """The body as ``schema``. It is read as JSON whatever the Content-Type says: ``curl -d`` sends
    form encoding by default, and OpenAI's server accepts such requests too."""
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenAIError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise _bad_request(error) from None


def _bad_request(error: ValidationError) -> OpenAIError:
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {location[-1]}", param=location[-1])
    param = ".".join(location) or (message.split(":", 1)[0] if ":" in message else None)
    if location and not message.startswith(location[0]):
        message = f"Invalid value for '{'.'.join(location)}': {message}"
    return OpenAIError(400, message, param=param)


def _job(engine: AsyncEngine, body: CompletionRequest | ChatCompletionRequest, prompts: list[list[int]],
         context_length: int, stop_token_ids: tuple[int, ...], *, logprobs: int | None, prompt_param: str,
         limit: int | None = None) -> Job:
    choices = []
    for prompt_index, prompt in enumerate(prompts):
        if not prompt:
            raise OpenAIError(400, f"{prompt_param}: is empty", param=prompt_param)
        max_tokens = (limit if isinstance(body, ChatCompletionRequest) else body.max_tokens) or \
            context_length - len(prompt)  # no limit: up to the end of the context
        if max_tokens < 1:
            max_tokens = 1  # the length check below says how much too long the prompt is
        for copy in range(body.n):
            index = prompt_index * body.n + copy
            params = SamplingParams(
                max_tokens=max_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_k=body.effective_top_k(), top_p=body.top_p,
                seed=None if body.seed is None else body.seed + index,
                stop_token_ids=stop_token_ids, logprobs=logprobs)
            try:
                engine.engine.check_request(prompt, params)
            except RequestError as error:
                raise OpenAIError(400, str(error), param=prompt_param, code=error.code) from None
            choices.append((prompt, params))
    return Job(choices, sum(len(prompt) for prompt in prompts), body.stop_strings())


async def _choice(engine: AsyncEngine, served: InferenceModel, index: int, prompt: list[int],
                  params: SamplingParams, stop: list[str]) -> AsyncIterator[Delta]:
    text = TextStream(served.encoding, stop)
    async with aclosing(engine.stream(prompt, params)) as events:
        async for event in events:
            if event.finish_reason == "error":
                raise OpenAIError(500, f"the engine failed: {event.error}", kind="server_error")
            produced = [event] if event.token is not None else []
            piece = text.push(event.token) if event.token is not None else ""
            if text.stopped:  # a stop string: leaving the loop cancels the engine request
                yield Delta(index, piece, produced, "stop")
                return
            if event.finish_reason is not None:
                yield Delta(index, piece + text.finish(), produced, event.finish_reason)
                return
            if piece or produced:
                yield Delta(index, piece, produced, None)


async def _deltas(engine: AsyncEngine, served: InferenceModel, job: Job) -> AsyncIterator[Delta]:
    """Every choice's deltas as they come; leaving early cancels all choices."""
    deltas: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, prompt: list[int], params: SamplingParams) -> None:
        try:
            async with aclosing(_choice(engine, served, index, prompt, params, job.stop)) as choice:
                async for delta in choice:
                    await deltas.put(delta)
        except Exception as error:  # noqa: BLE001 - handed to the reader
            await deltas.put(error)
        finally:
            await deltas.put(done)

    tasks = [asyncio.create_task(pump(index, prompt, params)) for index, (prompt, params) in enumerate(job.choices)]
    try:
        running = len(tasks)
        while running:
            item = await deltas.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect(engine: AsyncEngine, served: InferenceModel, job: Job) -> list[Choice]:
    choices = [Choice(index, 0) for index in range(len(job.choices))]
    async with aclosing(_deltas(engine, served, job)) as deltas:
        async for delta in deltas:
            choice = choices[delta.index]
            choice.text += delta.text
            choice.events.extend(delta.events)
            choice.finish_reason = delta.finish_reason or choice.finish_reason
    return choices


async def _stream(engine: AsyncEngine, served: InferenceModel, job: Job, body, chunk: Callable[[Delta], dict],
                  response_id: str, created: int, model_name: str, object_name: str) -> AsyncIterator[str]:
    """Server-sent events: a chunk per delta, then usage, then ``[DONE]``. Without
    ``stream_options.include_usage`` the usage rides on the last choice's final chunk."""
    choices = [Choice(index, 0) for index in range(len(job.choices))]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        async with aclosing(_deltas(engine, served, job)) as deltas:
            async for delta in deltas:
                choice = choices[delta.index]
                choice.events.extend(delta.events)
                choice.finish_reason = delta.finish_reason or choice.finish_reason
                payload = chunk(delta)
                if delta.finish_reason and not include_usage and all(c.finish_reason for c in choices):
                    payload["usage"] = _usage(job, choices)
                yield _event(payload)
        if include_usage:
            yield _event({"id": response_id, "object": object_name, "created": created, "model": model_name,
                          "choices": [], "usage": _usage(job, choices)})
    except OpenAIError as error:  # the status line has gone out already: the error is an event
        yield _event(error.body())
    yield "data: [DONE]\n\n"


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(job: Job, choices: list[Choice]) -> dict[str, int]:
    completion = sum(len(choice.events) for choice in choices)
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion}


def _completion_logprobs(served: InferenceModel, events: list[TokenEvent], top: int | None) -> dict | None:
    """The legacy completions shape: parallel lists per token."""
    if top is None:
        return None
    tokens = [token_text(served.encoding, event.token) for event in events]
    offsets, position = [], 0
    for text in tokens:
        offsets.append(position)
        position += len(text)
    return {"tokens": tokens,
            "token_logprobs": [event.logprob for event in events],
            "top_logprobs": [{token_text(served.encoding, token): logprob for token, logprob in event.top_logprobs}
                             for event in events],
            "text_offset": offsets}


def _chat_logprobs(served: InferenceModel, events: list[TokenEvent], top: int | None) -> dict | None:
    if top is None:
        return None

    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {"token": token_text(served.encoding, token), "logprob": logprob,
                "bytes": list(served.encoding.decode_single_token_bytes(token))}

    return {"content": [{**entry(event.token, event.logprob),
                         "top_logprobs": [entry(token, logprob) for token, logprob in event.top_logprobs]}
                        for event in events]}
