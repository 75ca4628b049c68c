"""Training checkpoints: everything a run needs to continue exactly where it stopped, on any
number of workers.

A training checkpoint is one folder; Ray Train merges into it what each worker reports:

    state/            model and optimizer, written in shards by torch.distributed.checkpoint (DCP):
                      each worker writes its own part (an FSDP shard, a pipeline stage; a replicated
                      DDP tensor once), and nothing is gathered onto one worker
    train_state.pt    the step and the tokens seen                                 [rank 0]
    rank-00000.pt     one worker's random-number generators and data-loader position [every rank]
    model/            the full model in the task's format (ours: model.safetensors + model.json),
                      written once, by the driver, into the checkpoint the run keeps as its model

DCP's files name tensors by their parameter names, which are the same under DDP, FSDP and a
pipeline, so a checkpoint loads under any of them and any number of workers: DCP reshards.
The learning-rate schedule is a function of the step, so the step is its whole state.

The ``.pt`` files hold only tensors, numbers, strings, lists and dicts: they are read with
``torch.load(weights_only=True)``; DCP's files hold tensors and its own metadata, so loading a
checkpoint never runs pickled code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_DIR = "model"
STATE_DIR = "state"
TRAIN_STATE_FILE = "train_state.pt"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def worker_state_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators (CPU and every GPU) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state, as plain tensors and lists."""
    version, python_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this worker's device
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_train_state(directory: Path, *, step: int, tokens_seen: int, world_size: int) -> None:
    torch.save({"step": step, "tokens_seen": tokens_seen, "world_size": world_size}, directory / TRAIN_STATE_FILE)


def load_train_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)


def save_worker_state(directory: Path, rank: int, *, loader: dict[str, Any]) -> None:
    torch.save({"rng": rng_state(), "loader": loader}, directory / worker_state_file(rank))


def load_worker_state(directory: Path, rank: int) -> dict[str, Any]:
    return torch.load(directory / worker_state_file(rank), map_location="cpu", weights_only=True)
