"""The OpenAI-compatible server as its users meet it: ``python jobs/serve.py`` on a Ray cluster
(``ray start --head``, token authentication on), called with the real ``openai`` client, curl-style
raw HTTP and a headless Chromium on the chat page.

One server is started for the whole module (it takes ~30 s on two cores) and every test talks to
it; the replica-kill test runs last, as it restarts the replica under everyone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch
from torch import nn

from model.checkpoint import save_checkpoint
from model.config import preset
from model.finetune.instructions import PromptTemplate
from model.gpt import GPT
from pipeline.tokenizer import load_tokenizer, tokenizer_identity
from tests.e2e.conftest import REPO, free_port, stop_group, wait_for_http

pytestmark = pytest.mark.e2e

MODEL_NAME = "tiny-gpt2-vocab"
API_KEY = "test-key-not-a-secret"
PROMPTS = ["The best way to", "Once upon a time", "In 1842, the", "Hello", "Machine learning is",
           "A list of fruits:", "She opened the door and", "The capital of France"]


def make_model(folder: Path) -> Path:
    """A small GPT with GPT-2's tokenizer and larger-than-GPT-2 init weights, so each next-token
    distribution has a clear winner and greedy decoding does not hinge on float rounding."""
    encoding = load_tokenizer("gpt2")
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=encoding.n_vocab, context_length=128))
    for parameter in model.parameters():
        if parameter.dim() >= 2:
            nn.init.normal_(parameter, std=0.1)
    return save_checkpoint(model, folder / MODEL_NAME / "model", {"spec": "gpt2", **tokenizer_identity(encoding)})


class Server:
    def __init__(self, base: str, model_dir: Path, head):
        self.base, self.model_dir, self.head = base, model_dir, head
        self.client = openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=120)

    def raw(self, path: str, body: bytes | None = None, key: str | None = API_KEY) -> tuple[int, dict]:
        """A request as curl sends it: form content type, optional bearer key; -> (status, JSON)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(f"{self.base}{path}", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def greedy(self, prompt: str, max_tokens: int) -> str:
        return self.client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens,
                                              temperature=0).choices[0].text


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus, ray_head_with_token):
    folder = tmp_path_factory.mktemp("serving")
    model_dir = make_model(folder)
    head = ray_head_with_token
    port = free_port()
    env = {**head.env, "RAY_ADDRESS": head.address, "WEBLLM_TEST_KEY": API_KEY, "CORPUS_DIR": str(corpus)}
    command = [sys.executable, "jobs/serve.py", "--model", str(folder / MODEL_NAME), "--port", str(port),
               "--api-key-env", "WEBLLM_TEST_KEY", "--max-batch-size", "16"]
    log = folder / "serve.log"
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=open(log, "w"),
                               stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 240, process)
        yield Server(f"http://127.0.0.1:{port}", model_dir, head)
        process.send_signal(signal.SIGINT)  # Ctrl-C: the job deletes its application and exits
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "OpenAI API: http://127.0.0.1" in log.read_text()
    finally:
        stop_group(process)


def generate_py(model_dir: Path, prompt: str, max_tokens: int) -> str:
    result = subprocess.run([sys.executable, "jobs/generate.py", "--checkpoint", str(model_dir), "--prompt", prompt,
                             "--max-new-tokens", str(max_tokens), "--temperature", "0"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout.removesuffix("\n")


def test_models_names_the_served_model(server):
    (model,) = server.client.models.list().data
    assert model.id == MODEL_NAME


def test_greedy_completion_equals_generate_py(server):
    completion = server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=24, temperature=0)
    assert completion.choices[0].text == generate_py(server.model_dir, PROMPTS[0], 24)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 24
    assert completion.usage.prompt_tokens == len(load_tokenizer("gpt2").encode(PROMPTS[0]))


def test_streaming_gives_the_same_text(server):
    expected = server.greedy(PROMPTS[1], 20)
    chunks = list(server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=20,
                                                   temperature=0, stream=True))
    assert len(chunks) > 5  # token by token, not one piece at the end
    assert "".join(chunk.choices[0].text for chunk in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 20

    messages = [{"role": "user", "content": "Name three colors."}]
    whole = server.client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0)
    streamed = list(server.client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16,
                                                          temperature=0, stream=True,
                                                          stream_options={"include_usage": True}))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole.choices[0].message.content
    assert streamed[-1].usage.total_tokens == whole.usage.total_tokens


def test_chat_formats_messages_with_the_instruction_template(server):
    reply = server.client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4, temperature=0)
    prompt = PromptTemplate().prompt({"instruction": "Hi", "input": ""})
    assert reply.usage.prompt_tokens == len(load_tokenizer("gpt2").encode_ordinary(prompt))
    assert reply.choices[0].message.role == "assistant"


def test_n_stop_and_logprobs(server):
    sampled = server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[2], max_tokens=12, n=3,
                                               temperature=1.0, seed=5)
    again = server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[2], max_tokens=12, n=3,
                                             temperature=1.0, seed=5)
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]  # a seed repeats
    assert sampled.usage.completion_tokens == 36

    full = server.greedy(PROMPTS[3], 30)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[3], max_tokens=30, temperature=0,
                                           stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"

    scored = server.client.completions.create(model=MODEL_NAME, prompt=PROMPTS[4], max_tokens=6, temperature=0,
                                              logprobs=2)
    logprobs = scored.choices[0].logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text
    assert len(logprobs.token_logprobs) == 6 and all(value <= 0 for value in logprobs.token_logprobs)
    assert all(len(top) == 2 and max(top.values()) == value  # greedy picks the most likely token
               for top, value in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    chat = server.client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    assert len(chat.choices[0].logprobs.content) == 3
    assert all(len(entry.top_logprobs) == 2 for entry in chat.choices[0].logprobs.content)


def test_concurrent_requests_each_get_their_own_continuation(server):
    lengths = [8 + 3 * index for index in range(len(PROMPTS))] * 2  # 16 requests of different lengths
    prompts = PROMPTS * 2
    alone = [server.greedy(prompt, length) for prompt, length in zip(prompts[:8], lengths[:8])]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(server.greedy, prompts, lengths))
    assert together[:8] == alone
    assert together[8:] == [server.greedy(prompt, length) for prompt, length in zip(prompts[8:], lengths[8:])]


def test_every_error_path_returns_its_code_and_the_server_keeps_serving(server):
    body = {"model": MODEL_NAME, "prompt": "x", "max_tokens": 2}
    cases = [
        (400, "invalid_request_error", {**body, "temperature": 5}),
        (400, "invalid_request_error", {**body, "frobnicate": True}),
        (400, "invalid_request_error", {**body, "max_tokens": 500}),  # beyond the 128-token context
        (400, "invalid_request_error", {**body, "prompt": []}),
        (404, "invalid_request_error", {**body, "model": "gpt-4"}),
    ]
    for status, kind, request in cases:
        code, answer = server.raw("/v1/completions", json.dumps(request).encode())
        assert (code, answer["error"]["type"]) == (status, kind), (request, answer)
        assert answer["error"]["message"]
        assert server.greedy("ok", 2)  # still serving
    too_long = json.dumps({**body, "max_tokens": 500}).encode()
    assert server.raw("/v1/completions", too_long)[1]["error"]["code"] == "context_length_exceeded"
    assert server.raw("/v1/completions", b"{not json")[0] == 400
    assert server.raw("/v1/nothing-here")[0] == 404
    assert server.raw("/v1/completions", json.dumps(body).encode(), key=None)[0] == 401
    assert server.raw("/v1/models", key="wrong")[0] == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        server.client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "x " * 200}])
    with pytest.raises(openai.NotFoundError):
        server.client.completions.create(model="nope", prompt="x")
    status, answer = server.raw("/v1/completions", json.dumps(body).encode())  # curl's form content type
    assert status == 200 and answer["usage"]["completion_tokens"] == 2


def test_the_chat_page_streams_a_reply_in_a_headless_browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(server.base + "/")
            assert MODEL_NAME in page.title()
            page.fill("#api-key", API_KEY)
            page.fill("#max-tokens", "24")
            page.fill("#prompt", "Tell me a story.")
            page.press("#prompt", "Enter")
            reply = page.locator(".message.assistant[data-state=done]")
            reply.wait_for(timeout=60_000)
            assert int(reply.get_attribute("data-chunks")) > 3  # it arrived in pieces, as a stream
            assert reply.inner_text().strip()
            assert page.locator(".message.user").inner_text() == "Tell me a story."
        finally:
            browser.close()


def replica_pids() -> list[int]:
    """The Serve replicas' processes, by the title Ray gives an actor's worker process."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:  # not a process, or gone
            continue
        if entry.name.isdigit() and title.startswith(b"ray::ServeReplica:webllm:OpenAIServer"):
            pids.append(int(entry.name))
    return pids


def test_a_killed_replica_is_restarted_and_requests_succeed_again(server):
    (victim,) = replica_pids()
    expected = server.greedy(PROMPTS[5], 10)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while True:
        try:
            assert server.greedy(PROMPTS[5], 10) == expected
            break
        except (openai.APIError, AssertionError):
            assert time.monotonic() < deadline, "the server did not come back after its replica was killed"
            time.sleep(2)
    assert replica_pids() and victim not in replica_pids()
