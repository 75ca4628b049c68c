"""Scoring generated responses 0-100 with a judge model, as the book does with Llama 3 in Ollama.

The judge is any OpenAI-compatible chat-completions endpoint (Ollama serves one at
``http://localhost:11434/v1``); it is asked for an integer only, and replies that hold none count
as unscored.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Annotated

from pydantic import Field

from pipeline.config import config_dataclass


@config_dataclass
class JudgeConfig:
    url: str | None = None  # e.g. http://localhost:11434/v1; None: responses are not scored
    model: str = "llama3"
    timeout_s: Annotated[float, Field(gt=0)] = 120.0


def judge_prompt(prompt: str, reference: str, response: str) -> str:
    return (f"Given the input `{prompt}` and correct output `{reference}`, score the model response "
            f"`{response}` on a scale from 0 to 100, where 100 is the best score. "
            "Respond with the integer number only.")


def parse_score(reply: str) -> int | None:
    match = re.search(r"\d+", reply)
    return min(int(match.group()), 100) if match else None


def score(config: JudgeConfig, prompt: str, reference: str, response: str) -> int | None:
    body = {"model": config.model, "temperature": 0,
            "messages": [{"role": "user", "content": judge_prompt(prompt, reference, response)}]}
    request = urllib.request.Request(f"{config.url.rstrip('/')}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=config.timeout_s) as reply:
        return parse_score(json.load(reply)["choices"][0]["message"]["content"])
