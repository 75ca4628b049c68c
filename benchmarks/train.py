"""Training-loop throughput under Ray Train against the same loop in plain PyTorch, in one process run.

    python benchmarks/train.py                  # about 4 minutes on 2 idle cores
    python benchmarks/train.py --steps 40 --model small-cpu

Cases, all on the same model, global batch, micro-batches and number of steps, fed from memory (the
loader has its own benchmark, benchmarks/loader.py):
- plain:    a plain PyTorch loop in this process (forward, backward with accumulation, clip, AdamW);
- ray x1:   model/train.py's loop under TorchTrainer, 1 worker with both CPUs (the same 2 threads);
- ray x2:   the same under TorchTrainer, 2 workers of 1 CPU each, DDP over gloo.

Each case runs once per round, in a rotating order; its tokens/s is the median step over all rounds,
leaving out the first few steps of each run (first allocations). The ratios ray x1 / plain (target
>= 0.95) and ray x2 / ray x1 are printed.

Then, once, the CPU demo config itself (jobs/configs/pretrain-demo.yaml: its model, batch, workers and
token shards through the Ray Data loader, without evaluations or tracking) for ``--demo-steps`` steps:
the fraction of step time spent waiting for data (target < 5%), over all steps and after the first few.
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path, where benchmarks/model.py would shadow the
# project's `model` package: take it off before importing anything else.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from model.config import GPTConfig, preset  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.launch import launch  # noqa: E402
from model.pretrain import PretrainConfig, PretrainTask, with_absolute_paths  # noqa: E402
from model.optim import build_optimizers, learning_rate_schedule, set_learning_rate  # noqa: E402
from model.train import Evaluation  # noqa: E402
from model.train_config import TrainConfig, accumulation_steps  # noqa: E402
from pipeline.config import load_config, validate  # noqa: E402

WARMUP_STEPS = 3


class SyntheticTask:
    """Next-token prediction on seeded random tokens: global micro-batch ``j * W + r`` is worker
    ``r``'s ``j``-th, the same tokens whatever the number of workers."""

    def __init__(self, model_config: GPTConfig):
        self.model_config = model_config
        self.sequence_length = model_config.context_length

    def datasets(self) -> dict[str, Any]:
        return {}

    def dataset_config(self) -> None:
        return None

    def build_model(self, load_weights: bool = True) -> nn.Module:
        return GPT(self.model_config)

    def loads_weights(self) -> bool:
        return False

    def train_batches(self, worker, micro_batch_size: int, state):
        return SyntheticBatches(self.model_config, worker.rank, worker.world_size, micro_batch_size)

    def stream_metrics(self, batches) -> dict[str, float]:
        return {}

    def prediction_count(self, batch) -> torch.Tensor:
        return torch.tensor(batch["targets"].numel())

    def loss_sum(self, model: nn.Module, batch) -> torch.Tensor:
        logits, _ = model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="sum")

    def flops_per_token(self, model: nn.Module) -> int:
        return flops_per_token(model, self.sequence_length)

    def evaluate(self, model, worker, step: int, final: bool) -> Evaluation:
        return Evaluation(metrics={"torch_threads": torch.get_num_threads()})

    def save_model(self, state, directory) -> None:
        directory.mkdir(parents=True)
        torch.save(state, directory / "weights.pt")

    def exports(self, model_dir, scratch) -> dict:
        return {}


class SyntheticBatches:
    def __init__(self, model_config: GPTConfig, rank: int, world_size: int, micro_batch_size: int):
        self.config, self.rank, self.world_size, self.size = model_config, rank, world_size, micro_batch_size
        self.taken = 0

    def __iter__(self):
        while True:
            yield micro_batch(self.config, self.size, self.taken * self.world_size + self.rank)
            self.taken += 1

    def state_dict(self) -> dict[str, int]:
        return {"taken": self.taken}


def micro_batch(config: GPTConfig, size: int, index: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(index)
    tokens = torch.randint(0, config.vocab_size, (size, config.context_length + 1), generator=generator)
    return {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:]}


def plain_loop(task: SyntheticTask, config: TrainConfig) -> list[float]:
    """The baseline: the textbook loop, in this process. Returns each step's seconds."""
    torch.manual_seed(config.run.seed)
    model = task.build_model()
    (optimizer,) = build_optimizers(model, config.optim)  # AdamW
    schedule = learning_rate_schedule(config.optim, config.run.max_steps)
    accumulation = accumulation_steps(config.batch, task.sequence_length, data_ranks=1)
    seconds = []
    for step in range(config.run.max_steps):
        started = time.perf_counter()
        for micro in range(accumulation):
            batch = micro_batch(task.model_config, config.batch.micro_batch_size, step * accumulation + micro)
            logits, _ = model(batch["input_ids"])
            loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()) / accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        set_learning_rate([optimizer], schedule(step))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the loop under test reads its loss every step too
        seconds.append(time.perf_counter() - started)
    return seconds


def ray_loop(task: SyntheticTask, config: TrainConfig) -> tuple[list[float], dict[str, float]]:
    outcome = launch(config, task, {}, {}, [])
    return [entry["seconds"] for entry in outcome.history], outcome.result.metrics


def demo_data_wait(config_path: str, steps: int, output: str) -> tuple[float, float, float]:
    """The demo config's run with the real loader: (data-wait fraction over all steps, over the steps
    after the first few, tokens/s after the first few)."""
    config = with_absolute_paths(load_config(PretrainConfig, config_path, [
        "run.name=demo-data-wait", f"run.output={output}", f"run.max_steps={steps}", f"run.log_every_steps={steps}",
        f"run.eval_every_steps={steps}", f"checkpoint.every_steps={steps}", "eval.val_batches=1",
        "eval.hellaswag.enabled=false", "eval.samples.prompts=[]", "tracking.enabled=false",
    ]))
    task = PretrainTask(config)
    outcome = launch(config, task, {}, {}, [])
    history, steady = outcome.history, outcome.history[WARMUP_STEPS:]
    tokens_per_step = config.batch.global_batch_tokens or config.batch.global_batch_size * task.sequence_length

    def fraction(entries: list[dict[str, float]]) -> float:
        return sum(entry["data_wait"] for entry in entries) / sum(entry["seconds"] for entry in entries)

    return fraction(history), fraction(steady), tokens_per_step / statistics.median(e["seconds"] for e in steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model preset")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--global-batch-size", type=int, default=32, help="sequences per optimizer step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demo-config", default="jobs/configs/pretrain-demo.yaml",
                        help="the CPU demo config whose data wait is measured (its token shards must exist)")
    parser.add_argument("--demo-steps", type=int, default=40, help="0 skips the demo data-wait case")
    args = parser.parse_args()

    model_config = preset(args.model, context_length=args.context_length)
    task = SyntheticTask(model_config)
    tokens_per_step = args.global_batch_size * args.context_length
    output = tempfile.mkdtemp(prefix="webllm-bench-train-")

    def config(workers: int, cpus: float, name: str) -> TrainConfig:
        return validate(TrainConfig, {
            "run": {"name": name, "output": output, "max_steps": args.steps,
                    "log_every_steps": args.steps, "eval_every_steps": args.steps},
            "batch": {"global_batch_size": args.global_batch_size, "micro_batch_size": args.micro_batch_size},
            "optim": {"warmup_steps": 5},
            "checkpoint": {"every_steps": args.steps, "keep_last": 1},
            "scaling": {"num_workers": workers, "cpus_per_worker": cpus},
            "tracking": {"enabled": False},
        })

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=500_000_000,
             log_to_driver=False)
    cases = {
        "plain": lambda run: (plain_loop(task, config(1, 2, run)), {}),
        "ray x1": lambda run: ray_loop(task, config(1, 2, run)),
        "ray x2": lambda run: ray_loop(task, config(2, 1, run)),
    }
    seconds: dict[str, list[float]] = {case: [] for case in cases}
    threads: dict[str, float] = {"plain": torch.get_num_threads()}
    try:
        for round_ in range(args.rounds):  # each round in another order: drift on a shared machine hits all
            order = list(cases)[round_ % len(cases):] + list(cases)[: round_ % len(cases)]
            for case in order:
                steps, metrics = cases[case](f"{case.replace(' ', '')}-{round_}")
                seconds[case] += steps[WARMUP_STEPS:]
                print(f"round {round_ + 1} {case:<8} {tokens_per_step / statistics.median(steps[WARMUP_STEPS:]):>10,.0f} tokens/s",
                      flush=True)
                threads.setdefault(case, metrics.get("torch_threads"))
        if args.demo_steps:
            demo = demo_data_wait(args.demo_config, args.demo_steps, output)
    finally:
        ray.shutdown()

    print(f"# benchmarks/train.py: {args.model} ctx {args.context_length}, {tokens_per_step} tokens/step "
          f"({args.global_batch_size} x {args.context_length}), micro-batch {args.micro_batch_size}, "
          f"{args.rounds} rounds of {args.steps} steps, median step after the first {WARMUP_STEPS} of each")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, "
          + ", ".join(f"{case} {count:.0f} threads" for case, count in threads.items()))
    rates = {case: tokens_per_step / statistics.median(steps) for case, steps in seconds.items()}
    for case, rate in rates.items():
        print(f"{case:<8} {rate:>10,.0f} tokens/s")
    print(f"ray x1 / plain   {rates['ray x1'] / rates['plain']:.3f}  (target >= 0.95)")
    print(f"ray x2 / ray x1  {rates['ray x2'] / rates['ray x1']:.3f}")
    if args.demo_steps:
        every, steady, demo_rate = demo
        print(f"demo ({args.demo_config}, {args.demo_steps} steps): data wait {100 * every:.2f}% of step time over all "
              f"steps, {100 * steady:.2f}% after the first {WARMUP_STEPS} (target < 5%); {demo_rate:,.0f} tokens/s")


if __name__ == "__main__":
    main()
