"""Model benchmarks, each case side by side with its baseline in one process.

    python benchmarks/model.py                          # CPU: a few minutes on 2 idle cores
    python benchmarks/model.py gpu --peak-tflops 989    # CUDA: what benchmarks/gpu.sh runs

CPU cases:
- training step (forward + backward) tokens/s, ours vs a reference with nanoGPT's architecture,
  rebuilt below from its published description, at identical shapes: the ``tiny`` preset and
  ``gpt2-124m`` at a short context. nanoGPT uses the exact GELU, so "ours" does too; ours with
  GPT-2's tanh approximation (the default, needed for GPT-2's weights) is shown beside it;
- generation tokens/s with and without the KV cache at 64, 128 and 256 new tokens.

GPU case: bf16 training steps (forward, backward, AdamW) of ``gpt2-124m`` at context 1024, eager
and under ``torch.compile``, ours vs the reference: tokens/s and MFU against ``--peak-tflops``.

Times are medians over rounds that alternate between the two sides, so drift on a shared
machine hits both alike.
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path, and there this file, model.py, would shadow
# the `model` package (and any benchmark named like a standard module would shadow that one): take
# the folder off before importing anything else.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from model.config import GPTConfig, preset  # noqa: E402
from model.generate import generate  # noqa: E402
from model.gpt import GPT, configure_optimizers, estimate_mfu  # noqa: E402


class NanoGPTReference(nn.Module):
    """nanoGPT's model (Karpathy, ``model.py``) as its README and code comments describe it:
    token + learned position embeddings; pre-LayerNorm blocks whose attention computes q, k, v with
    one fused linear layer and calls ``scaled_dot_product_attention(is_causal=True)``; a 4x MLP with
    exact GELU; a final LayerNorm and an LM head tied to the token embedding; loss over all logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        d, vocab = config.emb_dim, config.padded_vocab_size
        self.n_heads = config.n_heads
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(config.context_length, d)
        self.drop = nn.Dropout(config.drop_rate)
        self.h = nn.ModuleList(_ReferenceBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte.weight = self.lm_head.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layers))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


class _ReferenceBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        d = config.emb_dim
        self.n_heads, self.drop_rate = config.n_heads, config.drop_rate
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.gelu = nn.GELU()
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        dropout = self.drop_rate if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        x = x + self.resid_drop(self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return x + self.resid_drop(self.c_proj(self.gelu(self.c_fc(self.ln_2(x)))))


# Wall-clock time by default. On a busy shared machine, "cpu" (this process's CPU seconds) leaves
# out the time the scheduler gives to others; with one thread it is the time the work itself took.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def alternate(
    cases: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float], warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each case, the cases taking turns round by round."""
    for case in cases.values():
        for _ in range(warmup):
            case()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            start = clock()
            case()
            seconds[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def training_step(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        _, loss = model(ids, targets)
        loss.backward()

    return step


def cpu_training(
    name: str, config: GPTConfig, batch_size: int, seq_len: int, rounds: int, clock: Callable[[], float]
) -> None:
    """Ours with nanoGPT's exact GELU (the same computation as the reference), and ours as GPT-2 had
    it, with the tanh approximation, which GPT-2's weights need and which costs a little more on CPU."""
    torch.manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    targets = torch.roll(ids, -1, dims=1)
    models = {
        "ours": GPT(dataclasses.replace(config, gelu_approximate="none")).train(),
        "nanoGPT-arch": NanoGPTReference(config).train(),
        "ours, tanh GELU": GPT(dataclasses.replace(config, gelu_approximate="tanh")).train(),
    }
    seconds = alternate({side: training_step(model, ids, targets) for side, model in models.items()}, rounds, clock)
    tokens_per_s = {side: batch_size * seq_len / value for side, value in seconds.items()}
    print(
        f"| {name} | {batch_size}x{seq_len} | {tokens_per_s['ours']:,.0f} | {tokens_per_s['nanoGPT-arch']:,.0f} | "
        f"{seconds['nanoGPT-arch'] / seconds['ours']:.2f}x | {tokens_per_s['ours, tanh GELU']:,.0f} | "
        f"{seconds['nanoGPT-arch'] / seconds['ours, tanh GELU']:.2f}x |",
        flush=True,
    )


def cpu_generation(
    name: str, config: GPTConfig, lengths: list[int], prompt_length: int, rounds: int, clock: Callable[[], float]
) -> None:
    torch.manual_seed(0)
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (prompt_length,)).tolist()
    for new_tokens in lengths:
        runs = {
            "cache": lambda n=new_tokens: generate(model, [prompt], n, temperature=0),
            "no cache": lambda n=new_tokens: generate(model, [prompt], n, temperature=0, use_cache=False),
        }
        assert runs["cache"]() == runs["no cache"](), "cached greedy decoding must match the reference"
        seconds = alternate(runs, rounds, clock, warmup=0)
        print(
            f"| {name} | {new_tokens} | {new_tokens / seconds['cache']:,.0f} | "
            f"{new_tokens / seconds['no cache']:,.0f} | {seconds['no cache'] / seconds['cache']:.1f}x |",
            flush=True,
        )


def run_cpu(args: argparse.Namespace) -> None:
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, {args.clock} clock")
    print("\nTraining step, forward + backward, fp32: tokens/s (median) and speed relative to nanoGPT-arch\n")
    print("| preset | batch x seq | ours | nanoGPT-arch | ratio | ours, tanh GELU | ratio |")
    print("|---|---|---|---|---|---|---|")
    cpu_training("tiny", preset("tiny"), batch_size=8, seq_len=128, rounds=args.rounds * 4, clock=clock)
    cpu_training("gpt2-124m", preset("gpt2-124m"), batch_size=2, seq_len=64, rounds=args.rounds, clock=clock)

    print("\nGeneration, greedy, batch 1, 16-token prompt, context 512: new tokens/s, median\n")
    print("| preset | new tokens | KV cache | no cache | speed-up |\n|---|---|---|---|---|")
    # tiny: the blocks are most of the work. small-cpu: GPT-2's 50k-token LM head is, and it costs
    # the same with and without a cache, so the cache gains less.
    for name in ("tiny", "small-cpu"):
        config = preset(name, context_length=512)
        cpu_generation(name, config, [64, 128, 256], prompt_length=16, rounds=args.rounds, clock=clock)


def run_gpu(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: the GPU benchmark needs one (see benchmarks/gpu.sh)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = preset("gpt2-124m")
    seq_len, batch_size = config.context_length, args.batch_size
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, gpt2-124m, bf16 autocast, "
          f"batch {batch_size} x {seq_len}, AdamW; peak {args.peak_tflops} TFLOP/s")
    print("\n| model | mode | tokens/s | MFU | peak memory |\n|---|---|---|---|---|")
    results: dict[tuple[str, str], float] = {}
    with torch.device("meta"):  # MFU counts our model's FLOPs for both sides: same shapes, same work
        flops_model = GPT(config)
    for compiled in (False, True):
        for side, build in (("ours", GPT), ("nanoGPT-arch", NanoGPTReference)):
            torch.manual_seed(0)
            model = build(config).cuda().train()
            optimizer = configure_optimizers(model, learning_rate=6e-4, weight_decay=0.1)
            runner = torch.compile(model) if compiled else model
            ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), device="cuda")
            targets = torch.roll(ids, -1, dims=1)

            def step() -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    _, loss = runner(ids, targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            for _ in range(args.warmup):  # the first steps also compile
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
            tokens_per_s = batch_size * seq_len * args.steps / (time.perf_counter() - start)
            mode = "compiled" if compiled else "eager"
            results[side, mode] = tokens_per_s
            mfu = estimate_mfu(flops_model, tokens_per_s, args.peak_tflops * 1e12, seq_len)
            print(f"| {side} | {mode} | {tokens_per_s:,.0f} | {mfu:.1%} | "
                  f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB |", flush=True)
            del model, optimizer, runner
            torch.cuda.empty_cache()
    for mode in ("eager", "compiled"):
        print(f"ours / nanoGPT-arch, {mode}: {results['ours', mode] / results['nanoGPT-arch', mode]:.2f}x")
    print(f"compiled / eager, ours: {results['ours', 'compiled'] / results['ours', 'eager']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode")
    cpu = modes.add_parser("cpu", help="the default")
    cpu.add_argument("--rounds", type=int, default=5)
    cpu.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default (one per core)")
    cpu.add_argument("--clock", choices=CLOCKS, default="wall",
                     help="cpu: this process's CPU seconds, for busy machines (with --threads 1)")
    gpu = modes.add_parser("gpu")
    gpu.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak; 989 is an H100/H200 SXM")
    gpu.add_argument("--batch-size", type=int, default=16)
    gpu.add_argument("--warmup", type=int, default=10)
    gpu.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    if args.mode == "gpu":
        run_gpu(args)
    else:
        run_cpu(args if args.mode == "cpu" else cpu.parse_args([]))


if __name__ == "__main__":
    main()
