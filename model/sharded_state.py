"""Model and optimizer state in shards, with ``torch.distributed.checkpoint`` (DCP).

Every worker saves only what it holds (its FSDP shards, its pipeline stages; a tensor every DDP
worker holds is written once), and loads what it needs from whatever layout wrote it: DCP keys
tensors by parameter name and reshards, so a checkpoint written by 2 FSDP workers loads into 1
DDP worker, a 4-stage pipeline, or an unwrapped model on the driver.

Saving is asynchronous where it can be: ``dcp.async_save`` copies the state into CPU memory (the
only part the step waits for) and writes it from a background thread, which coordinates the
workers over a process group of its own, so its collectives never interleave with training's.
"""

from __future__ import annotations

import copy
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)


def state_dicts(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
    """The model's and the optimizers' state as DCP saves it: tensors (or shards) by parameter name."""
    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizers)}


class ShardedWriter:
    """Writes each worker's part of the model and optimizer state into a folder, in the
    background if ``asynchronous``. One save is in flight at a time; ``wait`` blocks until it is
    complete on this worker (every worker must call it: DCP's last step is collective)."""

    def __init__(self, asynchronous: bool):
        self.asynchronous = asynchronous
        self.group = dist.new_group(backend="gloo") if asynchronous and dist.is_initialized() else None
        self.pending: Future | None = None

    def save(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], directory: Path) -> None:
        self.wait()
        state = state_dicts(model, optimizers)
        if self.asynchronous:
            self.pending = dcp.async_save(state, checkpoint_id=str(directory), process_group=self.group,
                                          no_dist=not dist.is_initialized())
        else:
            dcp.save(state, checkpoint_id=str(directory), no_dist=not dist.is_initialized())

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None


def load_sharded(model: nn.Module, optimizers: list[torch.optim.Optimizer] | None, directory: Path) -> None:
    """Load a ``ShardedWriter`` folder into a (wrapped) model and its optimizers, each worker
    reading only the shards it needs."""
    state = state_dicts(model, optimizers) if optimizers else {"model": get_model_state_dict(model)}
    # The groups (which parameters, which hyperparameters) are this run's: a checkpoint holds one
    # worker's, which under a pipeline name only that worker's stages.
    groups = copy.deepcopy(state["optimizer"]["param_groups"]) if optimizers else None
    dcp.load(state, checkpoint_id=str(directory), no_dist=not dist.is_initialized())
    set_model_state_dict(model, state["model"])
    if optimizers:
        set_optimizer_state_dict(model, optimizers, {**state["optimizer"], "param_groups": groups})


def load_full_model(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load the model part of a ``ShardedWriter`` folder into an unwrapped model, in one process
    (the driver's final export): every tensor whole, whatever wrote it."""
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(directory), no_dist=True)
    model.load_state_dict(state["model"])
    return model
