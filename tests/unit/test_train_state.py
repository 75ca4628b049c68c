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


def test_train_state_with_optimizer_loads_weights_only(tmp_path):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    train_state.save_train_state(tmp_path, optimizer=optimizer.state_dict(), step=5, tokens_seen=640, world_size=2)
    state = train_state.load_train_state(tmp_path)
    assert (state["step"], state["tokens_seen"], state["world_size"]) == (5, 640, 2)
    restored = torch.optim.AdamW(torch.nn.Linear(4, 2).parameters(), lr=1.0)
    restored.load_state_dict(state["optimizer"])
    assert restored.param_groups[0]["betas"] == (0.9, 0.95)
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


class Arbitrary:
    """Stands for any class a crafted file could make torch.load instantiate."""


def test_a_pickled_object_is_refused(tmp_path):
    torch.save({"step": 1, "optimizer": {}, "tokens_seen": 0, "world_size": 1, "payload": Arbitrary()},
               tmp_path / train_state.TRAIN_STATE_FILE)
    with pytest.raises(Exception, match="Weights only load failed"):
        train_state.load_train_state(tmp_path)


def test_checkpoint_names_sort_by_step():
    names = [train_state.checkpoint_name(step) for step in (5, 40, 100, 1000)]
    assert names == sorted(names) and names[0] == "checkpoint-00000005"
