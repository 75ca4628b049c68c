"""model/parallel.py on 2 CPU processes with gloo: the code paths GPU workers take.

- every strategy x precision x preset that configs use trains: DDP and FSDP2, float32 and bfloat16
  (FSDP's mixed-precision policy, DDP's autocast), the CPU demo's preset and a GPT-2-vocabulary one
  (both pad the vocabulary, whose -inf bias must follow the compute dtype);
- FSDP builds the model on the meta device and draws each shard's init on its own worker: every
  layer's spread is the non-FSDP init's, and the shards are not copies of each other.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from model import parallel
from model.config import preset
from model.gpt import GPT
from model.optim import OptimConfig, build_optimizers
from pipeline.config import validate

PRESETS = {  # the configs' presets, two blocks each and a short context: the dtype paths are the same
    "small-cpu": preset("small-cpu", n_layers=2, context_length=32),
    "gpt2-124m": preset("gpt2-124m", n_layers=2, context_length=32, vocab_multiple=128),
}


def start_worker(rank: int, world_size: int, tmp_path) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(str(tmp_path / "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=120))


def build(name: str, strategy: str, precision: str) -> tuple[torch.nn.Module, parallel.ParallelConfig]:
    """As model/train.py builds a worker's model: on the meta device and materialized under FSDP."""
    config = validate(parallel.ParallelConfig, {"strategy": strategy, "precision": precision})
    torch.manual_seed(0)
    device = torch.device("cpu")
    if strategy == "ddp":
        return parallel.parallelize(GPT(PRESETS[name]), config, device, dist.get_world_size()), config
    return parallel.sharded_on_meta(lambda: GPT(PRESETS[name]), config, device, dist.get_world_size()), config


def train_every_combination(rank: int, world_size: int, tmp_path) -> None:
    start_worker(rank, world_size, tmp_path)
    losses = {}
    for name, model_config in PRESETS.items():
        tokens = torch.randint(0, model_config.vocab_size, (2, 33), generator=torch.Generator().manual_seed(rank))
        for strategy in ("ddp", "fsdp"):
            for precision in ("fp32", "bf16"):
                model, config = build(name, strategy, precision)
                optimizers = build_optimizers(model, OptimConfig(learning_rate=1e-3))
                curve = []
                for _ in range(2):
                    with parallel.autocast(config, torch.device("cpu")):
                        logits, _ = model(tokens[:, :-1])
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
                    loss.backward()
                    parallel.clip_gradients(model, 1.0)
                    for optimizer in optimizers:
                        optimizer.step()
                        optimizer.zero_grad()
                    curve.append(loss.item())
                losses[f"{name} {strategy} {precision}"] = curve
    (tmp_path / f"losses-{rank}.json").write_text(json.dumps(losses))
    dist.destroy_process_group()


def test_every_strategy_precision_and_preset_trains_on_two_workers(tmp_path):
    mp.spawn(train_every_combination, args=(2, tmp_path), nprocs=2)
    losses = json.loads((tmp_path / "losses-0.json").read_text())
    assert len(losses) == 8
    for key, curve in losses.items():
        assert all(math.isfinite(loss) for loss in curve), key
        # An untrained model predicts about uniformly: ln(vocabulary) nats, in any precision.
        vocabulary = PRESETS[key.split()[0]].vocab_size
        assert abs(curve[0] - math.log(vocabulary)) < 0.3, (key, curve)
        assert curve[1] < curve[0], (key, curve)  # the step learned something from the batch
    for name in PRESETS:
        for strategy in ("ddp", "fsdp"):
            fp32, bf16 = losses[f"{name} {strategy} fp32"], losses[f"{name} {strategy} bf16"]
            assert abs(bf16[0] - fp32[0]) < 0.05 * fp32[0], (name, strategy, fp32, bf16)


def init_spreads(rank: int, world_size: int, tmp_path) -> None:
    start_worker(rank, world_size, tmp_path)
    model, _ = build("small-cpu", "fsdp", "fp32")
    spreads, shards_differ = {}, {}
    for name, parameter in model.named_parameters():
        whole = parameter.full_tensor()
        spreads[name] = [whole.std().item(), whole.mean().item()]
        local = parameter.to_local().flatten()
        others = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(others, local)
        shards_differ[name] = not torch.equal(others[0], others[1]) if len(local) else True
    (tmp_path / f"spreads-{rank}.json").write_text(json.dumps({"spreads": spreads, "differ": shards_differ}))
    dist.destroy_process_group()


def test_fsdp_meta_init_matches_the_plain_init_layer_by_layer(tmp_path):
    mp.spawn(init_spreads, args=(2, tmp_path), nprocs=2)
    found = json.loads((tmp_path / "spreads-0.json").read_text())
    torch.manual_seed(1)
    plain = GPT(PRESETS["small-cpu"])
    for name, parameter in plain.named_parameters():
        std, mean = found["spreads"][name]
        expected = parameter.detach().std().item()
        if expected == 0:  # biases and norm biases start at zero, norm gains at one
            assert std == 0 and mean == parameter.detach().mean().item(), name
            continue
        assert abs(std - expected) < 0.05 * expected, (name, std, expected)
        assert found["differ"][name], f"{name}: the two workers' shards are copies"
