"""Scaling out, measured: each case runs its variants side by side in one call.

    python benchmarks/scaling.py memory        # peak RSS per worker, DDP vs FSDP, 2 gloo workers
    python benchmarks/scaling.py checkpoint    # the step-time cost of a checkpoint, sync vs async
    python benchmarks/scaling.py bubble        # a 2-stage pipeline's throughput vs the ideal m/(m+S-1)
    python benchmarks/scaling.py gpu           # one CUDA GPU: DDP vs FSDP, bf16 + compile, and a
                                               # 2-stage pipeline on the one device (benchmarks/gpu.sh)

Every case builds and wraps the model with the training loop's own code (``model/parallel.py``,
``model/stages.py``, ``model/sharded_state.py``), in worker processes joined by gloo (NCCL on GPU),
one torch thread each: the numbers are per worker, and per core on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import parallel  # noqa: E402
from model.config import preset  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.optim import OptimConfig, build_optimizers  # noqa: E402
from model.sharded_state import ShardedWriter  # noqa: E402
from model.stages import PipelinedGPT  # noqa: E402
from pipeline.config import validate  # noqa: E402


def start_worker(rank: int, world_size: int, folder: str, backend: str = "gloo") -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(os.path.join(folder, "store"), world_size)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(minutes=10))


def build(preset_name: str, strategy: str, precision: str, device: torch.device, context: int, **overrides):
    """A worker's model as model/train.py builds it: on the meta device and materialized under FSDP."""
    config = validate(parallel.ParallelConfig, {"strategy": strategy, "precision": precision,
                                                "compile": overrides.pop("compile", False)})
    model_config = preset(preset_name, context_length=context, **overrides)
    torch.manual_seed(0)
    if strategy == "ddp":
        return parallel.parallelize(GPT(model_config), config, device, dist.get_world_size()), config
    return parallel.sharded_on_meta(lambda: GPT(model_config), config, device, dist.get_world_size()), config


def train_step(model, config, optimizers, tokens: torch.Tensor, device: torch.device) -> float:
    with parallel.autocast(config, device):
        logits, _ = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
    loss.backward()
    parallel.clip_gradients(model, 1.0)
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# -- memory ----------------------------------------------------------------------------------------

def memory_worker(rank: int, world_size: int, folder: str, preset_name: str, strategy: str, context: int) -> None:
    start_worker(rank, world_size, folder)
    device = torch.device("cpu")
    model, config = build(preset_name, strategy, "fp32", device, context)
    optimizers = build_optimizers(model, OptimConfig())
    tokens = torch.randint(0, 50257, (1, context + 1), generator=torch.Generator().manual_seed(rank))
    started = time.perf_counter()
    for _ in range(2):  # the second step holds AdamW's moments too
        train_step(model, config, optimizers, tokens, device)
    seconds = (time.perf_counter() - started) / 2
    Path(folder, f"memory-{rank}.json").write_text(json.dumps({"peak_rss_gib": peak_rss_gib(), "step_s": seconds}))
    dist.destroy_process_group()


def run_memory(args: argparse.Namespace) -> None:
    print(f"peak RSS per worker, {args.workers} gloo workers, 2 AdamW steps of 1 x {args.context} tokens, float32")
    print("| preset | parameters | DDP | FSDP | FSDP / DDP |\n|---|---:|---:|---:|---:|")
    for preset_name in args.presets:
        peaks = {}
        for strategy in ("ddp", "fsdp"):
            if strategy == "ddp" and preset_name in args.fsdp_only:
                continue
            with tempfile.TemporaryDirectory() as folder:
                mp.spawn(memory_worker, args=(args.workers, folder, preset_name, strategy, args.context),
                         nprocs=args.workers)
                peaks[strategy] = max(json.loads(Path(folder, f"memory-{rank}.json").read_text())["peak_rss_gib"]
                                      for rank in range(args.workers))
        parameters = sum(p.numel() for p in GPT(preset(preset_name, context_length=args.context)).parameters())
        ddp = f"{peaks['ddp']:.2f} GiB" if "ddp" in peaks else "does not fit"
        ratio = f"{peaks['fsdp'] / peaks['ddp']:.2f}" if "ddp" in peaks else "-"
        print(f"| {preset_name} | {parameters / 1e6:.0f}M | {ddp} | {peaks['fsdp']:.2f} GiB | {ratio} |", flush=True)


# -- checkpoint ------------------------------------------------------------------------------------

def checkpoint_worker(rank: int, world_size: int, folder: str, preset_name: str, steps: int, every: int) -> None:
    start_worker(rank, world_size, folder)
    device = torch.device("cpu")
    model, config = build(preset_name, "ddp", "fp32", device, 64)
    optimizers = build_optimizers(model, OptimConfig())
    tokens = torch.randint(0, 50257, (2, 65), generator=torch.Generator().manual_seed(rank))
    results = {}
    for mode in ("none", "sync", "async"):
        writer = ShardedWriter(asynchronous=mode == "async")
        seconds = []
        for step in range(1, steps + 1):
            dist.barrier()
            started = time.perf_counter()
            train_step(model, config, optimizers, tokens, device)
            writer.wait()  # as the loop does: the step after a save waits for it, then reports it
            if mode != "none" and step % every == 0:
                writer.save(model, optimizers, Path(folder, f"{mode}-{step}"))
            seconds.append(time.perf_counter() - started)
        results[mode] = seconds
    Path(folder, f"checkpoint-{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def run_checkpoint(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
        mp.spawn(checkpoint_worker, args=(2, folder, args.preset, args.steps, args.every), nprocs=2)
        results = json.loads(Path(folder, "checkpoint-0.json").read_text())
    base = statistics.median(results["none"][1:])
    print(f"{args.preset}, 2 DDP workers of 1 thread, a checkpoint every {args.every} steps of {args.steps}: "
          "median seconds")
    print("| checkpoint | the step that saves | the step after | extra seconds per checkpoint (both) |")
    print("|---|---:|---:|---:|")
    print(f"| none | {base:.3f} | {base:.3f} | - |")
    for mode in ("sync", "async"):
        seconds = results[mode]
        saves = range(args.every, args.steps, args.every)  # 1-based steps that save, each with a next step
        saving = statistics.median(seconds[step - 1] for step in saves)
        after = statistics.median(seconds[step] for step in saves)
        extra = statistics.median(seconds[step - 1] + seconds[step] - 2 * base for step in saves)
        print(f"| {mode} | {saving:.3f} | {after:.3f} | {extra:.3f} |")


# -- pipeline bubble -------------------------------------------------------------------------------

def bubble_worker(rank: int, world_size: int, folder: str, preset_name: str, context: int, batch: int,
                  schedule: str, microbatches: int, chunks: int, steps: int, shape: dict) -> None:
    start_worker(rank, world_size, folder)
    device = torch.device("cpu")
    model_config = preset(preset_name, context_length=context, **shape)
    torch.manual_seed(0)
    tokens = torch.randint(0, model_config.vocab_size, (batch, context + 1), generator=torch.Generator().manual_seed(0))

    def loss_fn(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")

    times = []
    if world_size == 1:  # the reference: the whole model, the same micro-batches, one after the other
        model = GPT(model_config)
        for _ in range(steps):
            started = time.perf_counter()
            for micro in tokens.chunk(microbatches):
                loss_fn(model(micro[:, :-1])[0], micro[:, 1:]).backward()
            times.append(time.perf_counter() - started)
    else:
        pipe = PipelinedGPT(GPT(model_config), pp_rank=rank, pp_size=world_size, pp_group=None, device=device,
                            schedule=schedule, n_microbatches=microbatches, chunks_per_rank=chunks, loss_fn=loss_fn)
        for _ in range(steps):
            dist.barrier()
            started = time.perf_counter()
            pipe.step(tokens[:, :-1] if pipe.holds_first else None, tokens[:, 1:] if pipe.holds_last else None)
            times.append(time.perf_counter() - started)
    Path(folder, f"bubble-{rank}.json").write_text(json.dumps(statistics.median(times[1:])))
    dist.destroy_process_group()


def timed(world_size: int, *args) -> float:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(bubble_worker, args=(world_size, folder, *args), nprocs=world_size)
        return max(json.loads(Path(folder, f"bubble-{rank}.json").read_text()) for rank in range(world_size))


def run_bubble(args: argparse.Namespace) -> None:
    stages = 2
    tokens = args.batch * args.context
    # A small vocabulary: the blocks carry the compute, as in a large model, and the stages are even
    # (with GPT-2's 50k vocabulary the last stage's head would outweigh this model's blocks).
    shape = {"vocab_size": args.vocab_size, "n_layers": args.layers}
    print(f"{args.preset} with {args.layers} blocks and a {args.vocab_size}-token vocabulary at context "
          f"{args.context}, batches of {args.batch} sequences, {stages} stages on {stages} processes of 1 "
          f"thread; efficiency = (one process's time / {stages}) / the pipeline's time")
    print("| schedule | micro-batches | tokens/s | efficiency | ideal |\n|---|---:|---:|---:|---:|")
    for microbatches in (4, 8):
        whole = timed(1, args.preset, args.context, args.batch, "gpipe", microbatches, 1, args.steps, shape)
        print(f"| one process (reference) | {microbatches} | {tokens / whole:,.0f} | - | - |", flush=True)
        for schedule, chunks in (("gpipe", 1), ("1f1b", 1), ("interleaved_1f1b", 2)):
            seconds = timed(stages, args.preset, args.context, args.batch, schedule, microbatches, chunks, args.steps,
                            shape)
            # The bubble: S - 1 idle slots per rank over m micro-batches; interleaving shrinks each slot by
            # the chunks per rank.
            ideal = microbatches / (microbatches + (stages - 1) / chunks)
            print(f"| {schedule} | {microbatches} | {tokens / seconds:,.0f} | {whole / stages / seconds:.2f} | "
                  f"{ideal:.2f} |", flush=True)


# -- GPU -------------------------------------------------------------------------------------------

def gpu_worker(rank: int, world_size: int, folder: str, args: argparse.Namespace) -> None:
    start_worker(rank, world_size, folder, backend="nccl" if args.device == "cuda" else "gloo")
    device = torch.device(args.device)
    vocab = preset(args.preset).vocab_size
    tokens = torch.randint(0, vocab, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(0)).to(device)
    rows = {}
    for strategy in ("ddp", "fsdp"):
        model, config = build(args.preset, strategy, "bf16", device, args.context, compile=args.compile)
        optimizers = build_optimizers(model, OptimConfig())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(args.warmup + args.steps):
            started = time.perf_counter()
            train_step(model, config, optimizers, tokens, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - started)
        tokens_per_s = args.batch * args.context / statistics.median(times)
        flops = flops_per_token(parallel.inner_module(model), args.context)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_gib()
        rows[strategy] = {"tokens_per_s": tokens_per_s, "mfu": flops * tokens_per_s / args.peak_tflops / 1e12,
                          "peak_gib": peak}
        del model, optimizers
    # Correctness of the pipeline on the one device: 2 stages held by one process (interleaved
    # schedule, 2 chunks), the same losses as the unsplit model in float32.
    config = preset(args.preset, context_length=args.context, n_layers=2)
    torch.manual_seed(0)
    whole = GPT(config).to(device)
    torch.manual_seed(0)

    def loss_fn(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")

    pipe = PipelinedGPT(GPT(config), pp_rank=0, pp_size=1, pp_group=None, device=device, schedule="interleaved_1f1b",
                        n_microbatches=2, chunks_per_rank=2, loss_fn=loss_fn)
    small = tokens[:4]
    piped = pipe.step(small[:, :-1], small[:, 1:]).item()
    reference = sum(loss_fn(whole(micro[:, :-1])[0], micro[:, 1:]).item() for micro in small.chunk(2))
    rows["pipeline"] = {"loss": piped, "reference_loss": reference, "relative_difference": abs(piped - reference) / reference}
    Path(folder, "gpu.json").write_text(json.dumps(rows))
    dist.destroy_process_group()


def run_gpu(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(gpu_worker, args=(1, folder, args), nprocs=1)
        rows = json.loads(Path(folder, "gpu.json").read_text())
    print(f"{args.preset} at context {args.context}, batch {args.batch}, bf16, compile={args.compile}, "
          f"{args.steps} timed steps")
    print("| strategy | tokens/s | MFU | peak memory |\n|---|---:|---:|---:|")
    for strategy in ("ddp", "fsdp"):
        row = rows[strategy]
        print(f"| {strategy} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | {row['peak_gib']:.2f} GiB |")
    pipeline = rows["pipeline"]
    print(f"2-stage pipeline on one device: loss {pipeline['loss']:.6f} vs unsplit {pipeline['reference_loss']:.6f} "
          f"(relative difference {pipeline['relative_difference']:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cases = parser.add_subparsers(dest="case", required=True)
    memory = cases.add_parser("memory")
    memory.add_argument("--presets", nargs="+", default=["gpt2-124m", "gpt2-355m", "gpt2-774m"])
    memory.add_argument("--fsdp-only", nargs="*", default=["gpt2-774m"], help="presets whose DDP copy would not fit")
    memory.add_argument("--workers", type=int, default=2)
    memory.add_argument("--context", type=int, default=64)
    checkpoint = cases.add_parser("checkpoint")
    checkpoint.add_argument("--preset", default="gpt2-124m")
    checkpoint.add_argument("--steps", type=int, default=16)
    checkpoint.add_argument("--every", type=int, default=4)
    checkpoint.add_argument("--scratch", default=None, help="where the checkpoints are written (a temp folder)")
    bubble = cases.add_parser("bubble")
    bubble.add_argument("--preset", default="small-cpu")
    bubble.add_argument("--context", type=int, default=128)
    bubble.add_argument("--batch", type=int, default=16)
    bubble.add_argument("--steps", type=int, default=5)
    bubble.add_argument("--vocab-size", type=int, default=512)
    bubble.add_argument("--layers", type=int, default=8)
    gpu = cases.add_parser("gpu")
    gpu.add_argument("--device", default="cuda", help="cpu: a smoke test of the same code")
    gpu.add_argument("--preset", default="gpt2-124m")
    gpu.add_argument("--context", type=int, default=1024)
    gpu.add_argument("--batch", type=int, default=16)
    gpu.add_argument("--steps", type=int, default=20)
    gpu.add_argument("--warmup", type=int, default=10)
    gpu.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    gpu.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    args = parser.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}")
    {"memory": run_memory, "checkpoint": run_checkpoint, "bubble": run_bubble, "gpu": run_gpu}[args.case](args)


if __name__ == "__main__":
    main()
