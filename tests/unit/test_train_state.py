"""Training-state files: every generator comes back exactly, and nothing needs unpickling code."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from model import train_state


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    train_state.seed_everything(7)
    draws()  # move every generator off its seed, including a cached Gaussian
    train_state.save_worker_state(tmp_path, rank=1, loader={"epoch": 2, "rows": [3, 4]})
    expected = draws()

    train_state.seed_everything(123)
    saved = train_state.load_worker_state(tmp_path, rank=1)  # torch.load(weights_only=True) inside
    train_state.restore_rng_state(saved["rng"])
    assert draws() == expected
    assert saved["loader"] == {"epoch": 2, "rows": [3, 4]}


def test_model_and_optimizer_state_round_trip_through_sharded_files(tmp_path):
    from model.sharded_state import ShardedWriter, load_full_model, load_sharded

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    for asynchronous in (False, True):
        writer = ShardedWriter(asynchronous)
        writer.save(model, [optimizer], tmp_path / f"state-{asynchronous}")
        writer.wait()
        restored = torch.nn.Linear(4, 2)
        restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1.0, betas=(0.8, 0.9))
        load_sharded(restored, [restored_optimizer], tmp_path / f"state-{asynchronous}")
        assert torch.equal(restored.weight, model.weight)
        # The state comes back; the hyperparameters are the resuming run's own (its config's).
        assert restored_optimizer.param_groups[0]["betas"] == (0.8, 0.9)
        assert torch.equal(restored_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
        assert torch.equal(load_full_model(torch.nn.Linear(4, 2), tmp_path / f"state-{asynchronous}").bias, model.bias)
    train_state.save_train_state(tmp_path, step=5, tokens_seen=640, world_size=2)
    state = train_state.load_train_state(tmp_path)
    assert (state["step"], state["tokens_seen"], state["world_size"]) == (5, 640, 2)


class Arbitrary:
    """Stands for any class a crafted file could make torch.load instantiate."""


def test_a_pickled_object_is_refused(tmp_path):
    torch.save({"step": 1, "tokens_seen": 0, "world_size": 1, "payload": Arbitrary()},
               tmp_path / train_state.TRAIN_STATE_FILE)
    with pytest.raises(Exception, match="Weights only load failed"):
        train_state.load_train_state(tmp_path)


def test_checkpoint_names_sort_by_step():
    names = [train_state.checkpoint_name(step) for step in (5, 40, 100, 1000)]
    assert names == sorted(names) and names[0] == "checkpoint-00000005"


def test_early_stopping_watches_the_kept_metric_in_its_direction():
    from model.train import EarlyStopping
    from model.train_config import TrainConfig
    from pipeline.config import validate

    config = validate(TrainConfig, {"run": {"eval_every_steps": 10, "early_stopping_evals": 2},
                                    "checkpoint": {"every_steps": 20, "keep_best": "val_accuracy"}})
    assert config.checkpoint.best_mode() == "max"
    watch = EarlyStopping(config)
    # Best 0.7 at step 20; 0.6, then 0.7 again (a tie is no improvement): two stale evaluations.
    decisions = [watch.evaluated(step, {"val_accuracy": value}) for step, value in
                 [(10, 0.5), (20, 0.7), (30, 0.6), (40, 0.7)]]
    assert decisions == [False, False, False, True] and watch.stopped and watch.best == 0.7

    by_loss = validate(TrainConfig, {"run": {"eval_every_steps": 10, "early_stopping_evals": 1},
                                     "checkpoint": {"every_steps": 10, "keep_best": "val_loss"}})
    assert by_loss.checkpoint.best_mode() == "min"
    watch = EarlyStopping(by_loss)
    assert [watch.evaluated(step, {"val_loss": value}) for step, value in [(10, 3.0), (20, 2.5), (30, 2.6)]] == \
        [False, False, True]
    assert not EarlyStopping(validate(TrainConfig, {})).evaluated(10, {"val_loss": 9.0})  # off by default


def test_keep_best_needs_a_fresh_evaluation_at_every_checkpoint_and_early_stopping_needs_keep_best():
    from model.train_config import TrainConfig
    from pipeline.config import ConfigError, validate

    with pytest.raises(ConfigError, match="every_steps: with keep_best it must be a multiple"):
        validate(TrainConfig, {"run": {"eval_every_steps": 10}, "checkpoint": {"every_steps": 15, "keep_best": "val_loss"}})
    with pytest.raises(ConfigError, match="early_stopping_evals: needs checkpoint.keep_best"):
        validate(TrainConfig, {"run": {"early_stopping_evals": 3}})


def test_the_mfu_peak_tells_gpu_variants_apart_and_follows_the_precision():
    from model.throughput import GPU_PEAK_FLOPS

    def peak(name: str, kind: str) -> float:
        return next(peaks[kind] for key, peaks in GPU_PEAK_FLOPS if key in name)

    assert peak("NVIDIA H100 PCIe", "bf16") < peak("NVIDIA H100 80GB HBM3", "bf16")
    assert peak("NVIDIA L4", "bf16") < peak("NVIDIA L40", "bf16") < peak("NVIDIA L40S", "bf16")
    assert peak("NVIDIA A100-SXM4-80GB", "fp32") < peak("NVIDIA A100-SXM4-80GB", "tf32") < peak("NVIDIA A100-SXM4-80GB", "bf16")
