"""Serving benchmarks, each side by side with its baseline in one run.

    python benchmarks/serve.py                         # both models, ~15 minutes on 2 idle cores
    python benchmarks/serve.py --models small-cpu --concurrency 1,16

1. **The server under load.** ``jobs/serve.py`` on a local Ray (one replica holding every CPU), driven
   by closed-loop clients with the ``openai`` package, streaming: each of ``c`` clients sends its
   next request when its previous one has finished. Output tokens/s at each ``c``, against the same
   requests sent one by one (``c`` = 1); time to first token (TTFT) and inter-token latency (ITL,
   the gaps between streamed tokens), p50 and p99.
2. **The engine against Hugging Face ``transformers``.** In one process with the same torch threads:
   our ``Engine`` completes a batch of requests; ``GPT2LMHeadModel.generate`` (KV cache, greedy)
   completes the same prompts, left-padded, at the same batch size, from our model exported in
   Hugging Face layout. Both produce exactly ``--max-tokens`` tokens per request.

Models: ``small-cpu`` (the demo's architecture: 11.5M parameters with GPT-2's 50k vocabulary) and
``gpt2-124m``, both with random weights (speed does not depend on the weights; with random weights
no request ends early at ``<|endoftext|>``). Prompts: tinyshakespeare lines of 4 to 40 tokens.
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path, where serve.py would shadow nothing today,
# but benchmarks/model.py would shadow the `model` package: take the folder off first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from model.checkpoint import export_hf_gpt2, save_checkpoint  # noqa: E402
from model.config import preset  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.serve.engine import Engine, SamplingParams  # noqa: E402
from pipeline.corpus import corpus_path  # noqa: E402
from pipeline.tokenizer import load_tokenizer, tokenizer_identity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def prompts(count: int, seed: int = 0) -> list[str]:
    encoding = load_tokenizer("gpt2")
    lines = [line for line in corpus_path("text", "tinyshakespeare.txt").read_text().splitlines()
             if 4 <= len(encoding.encode(line)) <= 40]
    return random.Random(seed).sample(lines, count)


def make_model(name: str, folder: Path) -> Path:
    encoding = load_tokenizer("gpt2")
    torch.manual_seed(0)
    model = GPT(preset(name, vocab_size=encoding.n_vocab))
    return save_checkpoint(model, folder / name / "model", {"spec": "gpt2", **tokenizer_identity(encoding)})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- 1. the server ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, max_batch_size: int, log: Path, options: list[str]) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen(
        [sys.executable, "jobs/serve.py", "--model", str(model_dir), "--port", str(port), "--num-cpus",
         str(os.cpu_count()), "--max-batch-size", str(max_batch_size), "--model-name", "bench", *options],
        cwd=REPO, env=env, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"jobs/serve.py exited: {log.read_text()[-2000:]}")
            time.sleep(1)
    raise TimeoutError("the server did not start")


def stream_one(client, prompt: str, max_tokens: int) -> tuple[float, list[float], int]:
    """-> (time to first token, the gaps between tokens, tokens)."""
    start = time.perf_counter()
    stamps = []
    tokens = 0
    for chunk in client.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].text:
            stamps.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])], tokens


def closed_loop(base: str, requests: list[str], clients: int, max_tokens: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)
    queue = list(requests)
    results = []

    def worker() -> None:
        while queue:
            results.append(stream_one(client, queue.pop(), max_tokens))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - start
    first = [ttft for ttft, _, _ in results]
    gaps = [gap for _, request_gaps, _ in results for gap in request_gaps]
    return {"tokens_per_s": sum(tokens for _, _, tokens in results) / seconds, "ttft_p50": percentile(first, 0.5),
            "ttft_p99": percentile(first, 0.99), "itl_p50": percentile(gaps, 0.5), "itl_p99": percentile(gaps, 0.99)}


def bench_server(model_dir: Path, levels: list[int], max_tokens: int, work: Path,
                 options: list[str]) -> dict[int, dict[str, float]]:
    port = free_port()
    process = start_server(model_dir, port, max(levels), work / f"serve-{model_dir.parent.name}.log", options)
    base = f"http://127.0.0.1:{port}"
    try:
        closed_loop(base, prompts(2, seed=99), 2, 8)  # warm-up: first-call costs out of the figures
        return {clients: closed_loop(base, prompts(max(16, 2 * clients), seed=clients), clients, max_tokens)
                for clients in levels}
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# -- 2. the engine against transformers ------------------------------------------------------------

def engine_tokens_per_s(model: GPT, batch: list[list[int]], max_tokens: int) -> float:
    engine = Engine(model, max_batch_size=len(batch), prefill_tokens=4096)
    params = SamplingParams(max_tokens=max_tokens, temperature=0)  # no stop token: every request runs to the end
    start = time.perf_counter()
    results = engine.run_to_completion([(index, prompt, params) for index, prompt in enumerate(batch)])
    seconds = time.perf_counter() - start
    return sum(len(events) for events in results.values()) / seconds


def hf_tokens_per_s(hf_model, batch: list[list[int]], max_tokens: int) -> float:
    longest = max(len(prompt) for prompt in batch)
    input_ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
    attention_mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])
    start = time.perf_counter()
    with torch.no_grad():
        output = hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_tokens,
                                   min_new_tokens=max_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    seconds = time.perf_counter() - start
    return (output.shape[1] - longest) * len(batch) / seconds


def bench_engine(name: str, model_dir: Path, sizes: list[int], max_tokens: int, rounds: int) -> dict[int, dict]:
    from transformers import GPT2LMHeadModel

    from model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(model_dir)
    hf_dir = export_hf_gpt2(model, model_dir.parent / "hf")
    hf_model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    encoding = load_tokenizer("gpt2")
    figures = {}
    for size in sizes:
        batch = [encoding.encode(text) for text in prompts(size, seed=size)]
        ours, theirs = [], []
        engine_tokens_per_s(model, batch[:1], 4)  # warm-up
        hf_tokens_per_s(hf_model, batch[:1], 4)
        for _ in range(rounds):  # alternating, so drift hits both alike
            ours.append(engine_tokens_per_s(model, batch, max_tokens))
            theirs.append(hf_tokens_per_s(hf_model, batch, max_tokens))
        figures[size] = {"ours": statistics.median(ours), "transformers": statistics.median(theirs)}
        print(f"  {name} batch {size:>2}: engine {figures[size]['ours']:7.1f} tok/s, transformers "
              f"{figures[size]['transformers']:7.1f} tok/s, ratio {figures[size]['ours'] / figures[size]['transformers']:.2f}x",
              flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small-cpu,gpt2-124m")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the engine-vs-transformers case")
    parser.add_argument("--server-option", action="append", default=[],
                        help="passed to jobs/serve.py, e.g. --server-option=--prefill-tokens=64")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    import transformers

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, python {platform.python_version()}; threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="webllm-bench-serve-") as scratch:
        work = Path(scratch)
        for name in args.models.split(","):
            model_dir = make_model(name, work)
            if not args.skip_server:
                figures = bench_server(model_dir, levels, args.max_tokens, work, args.server_option)
                one = figures[levels[0]]
                print(f"\n{name}: the server {' '.join(args.server_option)}, {args.max_tokens} tokens per request, "
                      "closed-loop streaming clients")
                print("| concurrent | tokens/s | vs one by one | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | ITL p99 / alone p50 |")
                print("|---:|---:|---:|---:|---:|---:|---:|---:|")
                for clients, row in figures.items():
                    print(f"| {clients} | {row['tokens_per_s']:.1f} | {row['tokens_per_s'] / one['tokens_per_s']:.2f}x | "
                          f"{row['ttft_p50'] * 1000:.0f} ms | {row['ttft_p99'] * 1000:.0f} ms | "
                          f"{row['itl_p50'] * 1000:.1f} ms | {row['itl_p99'] * 1000:.1f} ms | "
                          f"{row['itl_p99'] / one['itl_p50']:.2f} |", flush=True)
            if not args.skip_engine:
                print(f"\n{name}: engine vs transformers generate, same process, same threads")
                bench_engine(name, model_dir, levels, args.max_tokens, args.rounds)


if __name__ == "__main__":
    main()
