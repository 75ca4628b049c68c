"""How a model is spread over the training workers: DDP by default, FSDP2 as a switch.

The model code knows nothing of this (as in torchtitan's ``parallelize``): the wrapping, the
precision, ``torch.compile`` and the gradient-sync switch for accumulation are applied here, from
outside. Under FSDP the model is built on the ``meta`` device, sharded, and only then given memory
and values (``materialize``), so no worker ever holds the whole model. Checkpoints are written in
shards (model/sharded_state.py), and load under either strategy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated, Any, Callable, Iterator, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from model.gpt import GPT, Block
from model.stages import LocalStages, PipelinedGPT, gather_full_model
from pipeline.config import config_dataclass

@config_dataclass
class ParallelConfig:
    # ddp: every worker holds the whole model and optimizer; gradients are averaged.
    # fsdp: parameters, gradients and optimizer state are sharded over workers (FSDP2, fully_shard).
    # pipeline: the blocks are split into pipeline_stages stages, one per worker (model/stages.py);
    # with num_workers = stages x replicas, the replicas are data parallel (a 2-D mesh). Pretraining.
    strategy: Literal["ddp", "fsdp", "pipeline"] = "ddp"
    # auto: bfloat16 on GPU (autocast under DDP, a mixed-precision policy under FSDP), float32 on CPU.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False  # torch.compile: the whole model under DDP, each block under FSDP
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, more compute
    # TensorFloat-32 matmuls on Ampere and later: float32 range with a 10-bit mantissa, several times faster.
    allow_tf32: bool = True
    # Save checkpoints in the background (dcp.async_save): a step waits only for the copy to memory.
    async_checkpoint: bool = True
    pipeline_stages: Annotated[int, Field(ge=2)] = 2  # workers per pipeline (strategy: pipeline)
    # gpipe: all forwards, then all backwards; 1f1b: one forward one backward in the steady state
    # (fewer activations alive); interleaved_1f1b: pipeline_chunks_per_worker chunks per worker,
    # round robin, which shrinks the idle bubble. Micro-batches per step: the gradient accumulation.
    pipeline_schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    pipeline_chunks_per_worker: Annotated[int, Field(ge=1)] = 1  # 2 or more with interleaved_1f1b
    # Blocks per chunk by hand, e.g. [8, 8] (None: as even as possible), chunks in pipeline order.
    pipeline_split: list[Annotated[int, Field(ge=1)]] | None = None

    def __post_init__(self) -> None:
        if self.strategy != "pipeline":
            return
        if (self.pipeline_schedule == "interleaved_1f1b") != (self.pipeline_chunks_per_worker > 1):
            raise ValueError("parallel.pipeline_chunks_per_worker: 2 or more with interleaved_1f1b, 1 otherwise")
        chunks = self.pipeline_stages * self.pipeline_chunks_per_worker
        if self.pipeline_split is not None and len(self.pipeline_split) != chunks:
            raise ValueError(f"parallel.pipeline_split: {len(self.pipeline_split)} entries, but the pipeline "
                             f"has {chunks} chunks (pipeline_stages x pipeline_chunks_per_worker)")
        if self.compile:
            raise ValueError("parallel.compile: not with the pipeline strategy")

    def stages(self) -> int:
        """Workers per pipeline: 1 unless the strategy is pipeline."""
        return self.pipeline_stages if self.strategy == "pipeline" else 1


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing: keep only each block's input in the forward pass and recompute the
    block's inside during backward. Less memory (a block's activations are ~10-30x its input) for
    about a third more compute. Parameter names keep no trace of the wrapper in checkpoints."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Block):
                parent.register_module(name, checkpoint_wrapper(child))


def compute_dtype(config: ParallelConfig, device: torch.device) -> torch.dtype:
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


def parallelize(model: nn.Module, config: ParallelConfig, device: torch.device, world_size: int) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it for ``world_size`` workers (none for one worker)."""
    _allow_tf32(config, device)
    if not any(parameter.is_meta for parameter in model.parameters()):  # a meta model is materialized later
        model.to(device)
    if config.activation_checkpointing:
        checkpoint_blocks(model)
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


def _allow_tf32(config: ParallelConfig, device: torch.device) -> None:
    if device.type == "cuda" and config.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(config: ParallelConfig, device: torch.device) -> AbstractContextManager:
    """Under DDP and the pipeline, bfloat16 runs through autocast; FSDP's policy casts the
    parameters itself."""
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


class PipelineParallel(LocalStages):
    """A GPT under pipeline parallelism, as the training loop sees it: this worker's stages, under
    the GPT's parameter names (what its optimizers update and its checkpoints hold), the schedule
    that runs them (``pipe``), and the data-parallel group its gradients are averaged over.

    Workers are laid out on a 2-D mesh (data replicas x pipeline stages): worker ``r`` is stage
    ``r % stages`` of replica ``r // stages``. Every worker builds the same full GPT from the same
    seed and keeps its stages; the rest of the GPT serves evaluation, which gathers the other
    stages' current weights into it (``full_model``).
    """

    def __init__(self, model: GPT, config: ParallelConfig, device: torch.device, rank: int, world_size: int,
                 micro_batches: int, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        stages = config.pipeline_stages
        _allow_tf32(config, device)
        if config.activation_checkpointing:
            checkpoint_blocks(model)  # before the cut: the stages hold the wrapped blocks
        mesh = init_device_mesh(device.type, (world_size // stages, stages), mesh_dim_names=("data", "pipeline"))
        pipe = PipelinedGPT(model, pp_rank=rank % stages, pp_size=stages, pp_group=mesh["pipeline"].get_group(),
                            device=device, schedule=config.pipeline_schedule, n_microbatches=micro_batches,
                            chunks_per_rank=config.pipeline_chunks_per_worker, sizes=config.pipeline_split,
                            loss_fn=lambda logits, targets: loss_fn(logits, targets) * self.loss_scale)
        super().__init__(list(pipe.stages))
        self.loss_scale = 1.0  # set each step: the loss_fn's factor (see model/train.py)
        self.pipe = pipe
        self.data_group = mesh["data"].get_group() if world_size > stages else None
        self._full = [model.to(device)]  # in a list: not a submodule, so not in this module's state

    def average_gradients(self) -> None:
        """The data-parallel replicas' mean gradient on every replica."""
        if self.data_group is None:
            return
        replicas = dist.get_world_size(self.data_group)
        for parameter in self.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, group=self.data_group)
                parameter.grad.div_(replicas)

    def full_model(self) -> GPT:
        """The whole GPT with every stage's current weights (collective over the pipeline)."""
        return gather_full_model(self._full[0], self, self.pipe.pp_group)


def inner_module(model: nn.Module) -> nn.Module:
    """The module to run forward-only passes on (evaluation, generation): under DDP the wrapped
    module, so no collective runs; under FSDP the model itself, whose forward gathers the shards;
    under a pipeline the whole GPT, gathered from the stages (every worker must call it)."""
    if isinstance(model, PipelineParallel):
        return model.full_model()
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


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give a model built on the ``meta`` device (and perhaps sharded) memory on ``device``, and
    its computed buffers; its parameters are left uninitialised."""
    # Swapping keeps each Parameter object: the tied embedding and head stay one tensor (a plain
    # to_empty would give each its own copy).
    swapping = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.to_empty(device=device)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swapping)
    for gpt in [module for module in model.modules() if isinstance(module, GPT)]:
        gpt.init_buffers()


def sharded_on_meta(build: Callable[[], nn.Module], config: ParallelConfig, device: torch.device, world_size: int,
                    full_state: Callable[[], dict[str, Any]] | None = None) -> nn.Module:
    """An FSDP model that no worker ever holds whole: ``build`` runs on the meta device (no
    memory), the result is sharded, and only then each worker's shards get memory and values:
    drawn from the init, or, given ``full_state``, sent from rank 0's copy of those weights."""
    with torch.device("meta"):
        model = build()
    model = parallelize(model, config, device, world_size)
    materialize(model, device)
    state = None
    if full_state is not None:
        state = full_state() if not dist.is_initialized() or dist.get_rank() == 0 else {}
    _initialize(model, state)
    return model


def _initialize(model: nn.Module, full_state: dict[str, Any] | None) -> None:
    """Values for a materialized FSDP model: each worker draws its own shards from the init
    (``full_state`` None), or rank 0's ``full_state`` (the whole model's, {} on the other ranks)
    is broadcast to all, each worker keeping its shards."""
    if full_state is None:
        # On GPUs, DTensor draws each shard from its own part of one random stream. On CPU it draws
        # from each worker's own generator: seeded alike, the shards of a weight would be copies.
        if dist.is_initialized() and not torch.cuda.is_available():
            torch.manual_seed(torch.initial_seed() + dist.get_rank())
        for gpt in [module for module in model.modules() if isinstance(module, GPT)]:
            gpt.init_weights()
        return
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


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
