"""How a model is spread over the training workers: DDP by default, FSDP2 as a switch.

The model code knows nothing of this (as in torchtitan's ``parallelize``): the wrapping, the
precision, ``torch.compile`` and the gradient-sync switch for accumulation are applied here, from
outside. State dicts go in and out as full, unsharded tensors whatever the wrapping, so a
checkpoint written by a DDP run resumes under FSDP and the other way round.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from model.gpt import Block
from pipeline.config import config_dataclass

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


@config_dataclass
class ParallelConfig:
    # ddp: every worker holds the whole model and optimizer; gradients are averaged.
    # fsdp: parameters, gradients and optimizer state are sharded over workers (FSDP2, fully_shard).
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # auto: bfloat16 on GPU (autocast under DDP, a mixed-precision policy under FSDP), float32 on CPU.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False  # torch.compile: the whole model under DDP, each block under FSDP
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, more compute
    # TensorFloat-32 matmuls on Ampere and later: float32 range with a 10-bit mantissa, several times faster.
    allow_tf32: bool = True


def compute_dtype(config: ParallelConfig, device: torch.device) -> torch.dtype:
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


def parallelize(model: nn.Module, config: ParallelConfig, device: torch.device, world_size: int) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it for ``world_size`` workers (none for one worker)."""
    if device.type == "cuda" and config.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device)
    if config.strategy == "fsdp":
        policy = MixedPrecisionPolicy(param_dtype=compute_dtype(config, device), reduce_dtype=torch.float32)
        # Shard block by block, then the rest (embeddings, final norm, tied head) at the root: each
        # block's parameters are gathered just before it runs and freed right after.
        for block in [module for module in model.modules() if isinstance(module, Block)]:
            if config.compile:
                block.compile()
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if config.compile:
        model.compile()
    if world_size == 1:  # nothing to synchronise: skip DDP's hooks
        return model
    # No buffer needs broadcasting (RoPE tables are computed, not learned), so skip it every forward.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False)


def autocast(config: ParallelConfig, device: torch.device) -> AbstractContextManager:
    """Under DDP, bfloat16 runs through autocast; FSDP's policy casts the parameters itself."""
    dtype = compute_dtype(config, device)
    if dtype == torch.float32 or config.strategy == "fsdp":
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gradient_sync(model: nn.Module, enabled: bool) -> AbstractContextManager:
    """Skip the gradient all-reduce on the micro-steps before the last of an accumulation: the
    gradients add up locally and are averaged once, which gives the same result for less traffic."""
    if enabled:
        return nullcontext()
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    if isinstance(model, FSDPModule):
        return _fsdp_without_sync(model)
    return nullcontext()


@contextmanager
def _fsdp_without_sync(model: FSDPModule) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def inner_module(model: nn.Module) -> nn.Module:
    """The module to run forward-only passes on (evaluation, generation): under DDP the wrapped
    module, so no collective runs; under FSDP the model itself, whose forward gathers the shards."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Under FSDP, the root's own parameters (embeddings, final norm, head) gathered, for code that
    calls submodules and methods other than ``forward``, such as KV-cache generation."""
    inner = inner_module(model)
    if not isinstance(inner, FSDPModule):
        yield inner
        return
    inner.unshard()
    try:
        yield inner
    finally:
        inner.reshard()


def full_state_dicts(
    model: nn.Module, optimizers: list[torch.optim.Optimizer]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model state, and the optimizers' state keyed by parameter name, on the CPU; under
    FSDP complete on rank 0 only. Every worker must call it: under FSDP gathering is collective."""
    return (get_model_state_dict(model, options=FULL_STATE),
            get_optimizer_state_dict(model, optimizers, options=FULL_STATE))


def load_full_state_dicts(
    model: nn.Module, optimizers: list[torch.optim.Optimizer] | None, model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
) -> None:
    """Load full state dicts (as ``full_state_dicts`` returns them) into a wrapped model and its optimizers."""
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizers and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizers, optimizer_state, options=options)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all workers (the values themselves with one worker)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_max(value: int, device: torch.device) -> int:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor(value, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: measure only); return the norm before."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP: the norm over all shards
        norm = norm.full_tensor()
    return float(norm)
