"""The Ray Serve application: one engine per replica, behind the OpenAI-compatible API.

    jobs/serve.py --model REF            builds it with ``build_app`` and runs it (local Ray or RAY_ADDRESS)
    serve deploy infra/serve/webllm.yaml  the same builder, from a Serve config (``import_path``
                                          model.serve.app:build_app, ``args`` = ServeSettings)

Ray Serve only routes requests to replicas, restarts failed ones and scales them; the batching is
the engine's, so ``max_ongoing_requests`` lets each replica hold several batches' worth of requests.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from ray import serve

from model.inference import load_inference_model
from model.serve.api import build_openai_app
from model.serve.engine import Engine
from model.serve.runner import AsyncEngine
from pipeline.config import ConfigError, config_dataclass, validate

APP_NAME = "webllm"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@config_dataclass
class ServeSettings:
    model: str  # any reference of model/reference.py: a folder, s3://..., models:/name/version
    model_name: str | None = None  # what clients send as "model"; None: from the reference
    max_batch_size: Annotated[int, Field(ge=1)] = 16  # sequences decoded together per replica
    prefill_tokens: Annotated[int, Field(ge=1)] = 512  # prompt tokens prefilled per engine step, at most
    # The environment variable holding the API key clients must send; None: no key. Only its
    # sha256 leaves the process that reads it.
    api_key_env: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the replica has a GPU
    # Torch's CPU threads; None: as many as the replica's CPUs (Ray's setting). On CPU, the replica's
    # own HTTP and Ray threads, and the proxy beside it, compete with them: one fewer can be faster.
    torch_threads: Annotated[int, Field(ge=1)] | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on GPU, float32 on CPU


@serve.deployment(max_ongoing_requests=64, health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=20)
@serve.ingress()
class OpenAIServer:
    def __init__(self, settings: ServeSettings, api_key_sha256: str | None):
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _DTYPES.get(settings.dtype) or (torch.bfloat16 if device == "cuda" else torch.float32)
        served = load_inference_model(settings.model, device=device, dtype=dtype)
        self.engine = AsyncEngine(Engine(served.model, settings.max_batch_size, settings.prefill_tokens))
        self._app = build_openai_app(served, self.engine, settings.model_name or default_model_name(settings.model),
                                     api_key_sha256)

    def __serve_build_asgi_app__(self):
        return self._app

    def check_health(self) -> None:
        if not self.engine.alive:  # Serve replaces a replica whose engine thread died
            raise RuntimeError("the engine thread has stopped")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()


def build_app(args: dict[str, Any], **deployment_options: Any) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy`` (``args`` are ServeSettings) and for
    jobs/serve.py, which also sets the deployment's options (replicas, resources)."""
    settings = validate(ServeSettings, args)
    deployment = OpenAIServer.options(**deployment_options) if deployment_options else OpenAIServer
    return deployment.bind(settings, api_key_sha256(settings.api_key_env))


def api_key_sha256(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ConfigError(f"api_key_env: the environment variable {variable} is not set or empty")
    return hashlib.sha256(key.encode()).hexdigest()


def default_model_name(reference: str) -> str:
    """models:/webllm-demo/3 -> webllm-demo; data/runs/pretrain-demo/checkpoint-00000080/model -> pretrain-demo."""
    if reference.startswith("models:/"):
        return re.split(r"[/@]", reference.removeprefix("models:/"))[0]
    parts = [part for part in reference.rstrip("/").split("/") if part]
    while len(parts) > 1 and (parts[-1] == "model" or re.fullmatch(r"checkpoint-\d+", parts[-1])):
        parts.pop()
    return parts[-1] if parts else reference
