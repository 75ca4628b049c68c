"""The CPU time-to-quality race: our pretraining job against nanoGPT's CPU recipe on tinyshakespeare.

    python jobs/build_dataset.py --config jobs/configs/tinyshakespeare.yaml   # once: byte-level token shards
    python benchmarks/speedrun.py                   # one round: the baseline, then ours with AdamW and Muon
    python benchmarks/speedrun.py --rounds 3        # medians over rounds

The baseline is nanoGPT's README CPU recipe (``train.py config/train_shakespeare_char.py --device=cpu
--compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``), re-implemented here
from its description: the same model (LayerNorm without bias, fused QKV, 4x GELU MLP, tied head,
scaled residual init), the same data pipeline (random windows of a flat character stream, ids of
the characters present), the same loop (warmup 100 then cosine 1e-3 -> 1e-4, AdamW with betas
(0.9, 0.99) and decay 0.1 on matrices only, clip 1.0, an estimate on 20 random batches every 250
iterations, a checkpoint saved when it improves, iterations 0..2000 inclusive). It runs in this
process with as many torch threads as our job has CPUs.

Both sides read the same text: the token shards of jobs/configs/tinyshakespeare.yaml (one token per
byte, speeches held out whole, 90/10). The baseline's stream is the train split's text; its final
model is scored on every val sequence exactly as our job scores its own: ``val_bpb`` = summed nats /
(ln 2 * UTF-8 bytes of the targets). That figure is the target.

Ours is ``python jobs/pretrain.py --config jobs/configs/pretrain-tinyshakespeare.yaml``, started as a
user starts it (a fresh process that starts its own local Ray), once per optimizer. Its clock starts
when the process is launched; each evaluation's time is its ``val_bpb`` metric's MLflow timestamp.
Reported, per optimizer:
- time to target: the first evaluation at or below the baseline's final val bpb, over the baseline's
  wall time (target <= 0.7);
- bpb at the baseline's wall time: the last evaluation logged by then, minus the target (target
  <= -0.1).
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path, where benchmarks/model.py would shadow the
# project's `model` package: take it off before importing anything else.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from model.data import IGNORE_INDEX, model_batch  # noqa: E402
from model.evaluate import TokenBytes, bits_per_byte  # noqa: E402
from pipeline.tokenizer import load_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKENS = ROOT / "data" / "tokens" / "tinyshakespeare" / "v1"
CONFIG = "jobs/configs/pretrain-tinyshakespeare.yaml"


# ---------------------------------------------------------------------------------------------
# The baseline: nanoGPT's model and train.py loop, with the CPU recipe's settings


@dataclass
class Recipe:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias (nanoGPT's bias=False)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class SelfAttention(nn.Module):
    def __init__(self, recipe: Recipe):
        super().__init__()
        self.n_head = recipe.n_head
        self.c_attn = nn.Linear(recipe.n_embd, 3 * recipe.n_embd, bias=False)
        self.c_proj = nn.Linear(recipe.n_embd, recipe.n_embd, bias=False)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(batch, length, width))


class Block(nn.Module):
    def __init__(self, recipe: Recipe):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(recipe.n_embd), SelfAttention(recipe)
        self.ln_2 = LayerNorm(recipe.n_embd)
        self.c_fc = nn.Linear(recipe.n_embd, 4 * recipe.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * recipe.n_embd, recipe.n_embd, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class CharGPT(nn.Module):
    def __init__(self, recipe: Recipe, vocab_size: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, recipe.n_embd)
        self.wpe = nn.Embedding(recipe.block_size, recipe.n_embd)
        self.h = nn.ModuleList(Block(recipe) for _ in range(recipe.n_layer))
        self.ln_f = LayerNorm(recipe.n_embd)
        self.lm_head = nn.Linear(recipe.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled by depth
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * recipe.n_layer))

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def split_stream(split: str) -> np.ndarray:
    """A split's token stream, rebuilt from its windows (consecutive windows overlap by one token)."""
    manifest = json.loads((TOKENS / "manifest.json").read_text())
    pieces = []
    for shard in manifest["splits"][split]["shards"]:
        table = pq.read_table(TOKENS / shard["path"], columns=["tokens", "n_tokens"])
        windows = table["tokens"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        for row, real in zip(windows, table["n_tokens"].to_numpy()):
            pieces.append(row[:real] if not pieces else row[1:real])
    return np.concatenate(pieces).astype(np.int64)


def val_batches(batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """Every val sequence, as our job's validation reads them."""
    manifest = json.loads((TOKENS / "manifest.json").read_text())
    batches = []
    for shard in manifest["splits"]["val"]["shards"]:
        table = pq.read_table(TOKENS / shard["path"])
        table = table.append_column("source", pa.array(np.zeros(table.num_rows, np.int64)))  # one source
        batches += [model_batch(table.slice(start, batch_size)) for start in range(0, table.num_rows, batch_size)]
    return batches


def learning_rate(recipe: Recipe, it: int) -> float:
    if it < recipe.warmup_iters:
        return recipe.learning_rate * (it + 1) / (recipe.warmup_iters + 1)
    if it > recipe.lr_decay_iters:
        return recipe.min_lr
    ratio = (it - recipe.warmup_iters) / (recipe.lr_decay_iters - recipe.warmup_iters)
    return recipe.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (recipe.learning_rate - recipe.min_lr)


def run_baseline(recipe: Recipe, threads: int, seed: int, scratch: Path) -> dict[str, float]:
    """nanoGPT's loop; returns its wall time, its own last estimate and the final model's val bpb."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train, val = split_stream("train"), split_stream("val")
    symbols = np.unique(np.concatenate([train, val]))  # its vocabulary: the characters present
    to_id = np.zeros(symbols.max() + 1, np.int64)
    to_id[symbols] = np.arange(len(symbols))
    data = {"train": to_id[train], "val": to_id[val]}

    def get_batch(split: str):
        stream = data[split]
        starts = torch.randint(len(stream) - recipe.block_size, (recipe.batch_size,))
        x = torch.stack([torch.from_numpy(stream[i : i + recipe.block_size]) for i in starts])
        y = torch.stack([torch.from_numpy(stream[i + 1 : i + 1 + recipe.block_size]) for i in starts])
        return x, y

    def loss_of(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)

    @torch.no_grad()
    def estimate_loss(model) -> dict[str, float]:
        model.eval()
        out = {split: float(torch.stack([loss_of(model, *get_batch(split)) for _ in range(recipe.eval_iters)]).mean())
               for split in ("train", "val")}
        model.train()
        return out

    started = time.perf_counter()
    model = CharGPT(recipe, len(symbols))
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": recipe.weight_decay},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=recipe.learning_rate, betas=(recipe.beta1, recipe.beta2))
    best_val, last_estimate = float("inf"), {}
    x, y = get_batch("train")
    for it in range(recipe.max_iters + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, it)
        if it % recipe.eval_interval == 0:
            last_estimate = estimate_loss(model)
            print(f"  baseline iter {it}: {time.perf_counter() - started:.1f} s, estimate: val loss "
                  f"{last_estimate['val']:.4f} nats/char", flush=True)
            if last_estimate["val"] < best_val and it > 0:
                best_val = last_estimate["val"]
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": it},
                           scratch / "ckpt.pt")
        loss = loss_of(model, x, y)
        x, y = get_batch("train")  # the next batch is drawn while the step runs, as nanoGPT does
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "estimate_val_loss": last_estimate["val"], "val_bpb": score(model, to_id)}


@torch.no_grad()
def score(model: CharGPT, to_id: np.ndarray) -> float:
    """val bpb of the baseline on every val sequence, as PretrainTask scores ours."""
    model.eval()
    token_bytes = TokenBytes(load_tokenizer("bytes"), IGNORE_INDEX)
    lookup = torch.from_numpy(to_id)
    nats = text_bytes = 0.0
    for batch in val_batches():
        targets = batch["targets"]
        logits = model(lookup[batch["input_ids"]])
        scored = targets != IGNORE_INDEX
        mapped = torch.where(scored, lookup[targets.clamp(min=0)], IGNORE_INDEX)
        nats += float(F.cross_entropy(logits.flatten(0, 1), mapped.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"))
        text_bytes += token_bytes(targets)
    return bits_per_byte(nats, text_bytes)


# ---------------------------------------------------------------------------------------------
# Ours: the pretraining job as a user runs it


def run_ours(optimizer: str, overrides: list[str], scratch: Path) -> dict[str, object]:
    """One run of the job; (seconds since launch, step, val_bpb) at each evaluation."""
    tracking = f"sqlite:///{scratch}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray, started by the job: its start-up is on the clock
    client = mlflow.MlflowClient(tracking)
    client.search_experiments()  # creates the store's tables first: a user's tracking store already exists
    settings = [f"run.output={scratch}/runs", f"run.name=speedrun-{optimizer}", f"optim.name={optimizer}", *overrides]
    command = [sys.executable, "jobs/pretrain.py", "--config", CONFIG, *(f"--set={item}" for item in settings)]
    launched = time.time()
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.time() - launched
    if finished.returncode:
        sys.exit(f"our job failed ({finished.returncode}):\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    (run,) = client.search_runs(client.get_experiment_by_name("pretraining").experiment_id,
                                filter_string=f"attributes.run_name = 'speedrun-{optimizer}'")
    history = sorted(client.get_metric_history(run.info.run_id, "val_bpb"), key=lambda m: m.step)
    evals = [(m.timestamp / 1000 - launched, m.step, m.value) for m in history]
    return {"evals": evals, "process_s": ended}


def race(evals: list[tuple[float, int, float]], target_bpb: float, baseline_s: float) -> dict[str, float | None]:
    reached = next((seconds for seconds, _, bpb in evals if bpb <= target_bpb), None)
    by_then = [bpb for seconds, _, bpb in evals if seconds <= baseline_s]
    return {"time_to_target_s": reached,
            "time_ratio": reached / baseline_s if reached is not None else None,
            "bpb_at_baseline_time": by_then[-1] if by_then else None,
            "bpb_margin": by_then[-1] - target_bpb if by_then else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--optimizers", nargs="*", default=["adamw", "muon"], help="none: the baseline alone")
    parser.add_argument("--threads", type=int, default=2, help="the baseline's torch threads: our job's Ray CPUs")
    parser.add_argument("--baseline-iters", type=int, default=Recipe.max_iters)
    parser.add_argument("--set", nargs="+", action="extend", default=[], help="overrides for our job, key=value")
    args = parser.parse_args()
    if not (TOKENS / "manifest.json").is_file():
        sys.exit(f"no token shards at {TOKENS}: python jobs/build_dataset.py --config jobs/configs/tinyshakespeare.yaml")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; torch {torch.__version__}; python {platform.python_version()}")
    recipe = Recipe(max_iters=args.baseline_iters, lr_decay_iters=args.baseline_iters)
    results: dict[str, list[dict]] = {"baseline": [], **{name: [] for name in args.optimizers}}
    for round_index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="speedrun-") as folder:
            scratch = Path(folder)
            baseline = run_baseline(recipe, args.threads, seed=1337 + round_index, scratch=scratch)
            results["baseline"].append(baseline)
            print(f"round {round_index}: baseline {baseline['wall_s']:.1f} s, val bpb {baseline['val_bpb']:.4f} "
                  f"(its own estimate: val loss {baseline['estimate_val_loss']:.4f} nats/char)", flush=True)
            for name in args.optimizers:
                ours = run_ours(name, args.set, scratch)
                outcome = {**ours, **race(ours["evals"], baseline["val_bpb"], baseline["wall_s"])}
                results[name].append(outcome)
                print(f"round {round_index}: {name}: " + ", ".join(f"{s:.1f}s step {step} bpb {bpb:.4f}"
                                                                   for s, step, bpb in ours["evals"]), flush=True)
                print(f"  time to target {outcome['time_to_target_s']}, ratio {outcome['time_ratio']}, "
                      f"bpb at baseline time {outcome['bpb_at_baseline_time']} (margin {outcome['bpb_margin']}), "
                      f"process {ours['process_s']:.1f} s", flush=True)

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    base_wall = median([b["wall_s"] for b in results["baseline"]])
    print(f"\nbaseline (nanoGPT CPU recipe, {args.threads} threads): wall {base_wall:.1f} s, "
          f"val bpb {median([b['val_bpb'] for b in results['baseline']]):.4f} (median of {args.rounds})")
    for name in args.optimizers:
        ratio = median([o["time_ratio"] for o in results[name]])
        margin = median([o["bpb_margin"] for o in results[name]])
        print(f"ours, {name}: time to the baseline's bpb / baseline wall = "
              f"{'not reached' if ratio is None else f'{ratio:.2f}x'} (target <= 0.7); bpb at the baseline's wall "
              f"time - baseline's = {'n/a' if margin is None else f'{margin:+.3f}'} (target <= -0.1)")


if __name__ == "__main__":
    main()
