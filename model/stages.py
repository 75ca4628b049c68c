"""Pipeline parallelism: a GPT cut into stages of consecutive blocks, one or more per worker.

    rank 0: [embed, blocks 0-3] -> rank 1: [blocks 4-7, final norm, head] -> loss
            micro-batch activations flow forward, their gradients flow back

Each worker holds only its stages' parameters, so a model too large for one device's memory
trains on several. A batch is cut into micro-batches so that the stages work at the same time on
different ones (``torch.distributed.pipelining`` schedules them: GPipe, 1F1B, interleaved 1F1B).

As FSDP is, the split is applied from outside: ``gpt.py`` knows nothing of it. Every worker builds
the same full GPT from the same seed, then keeps its stages (and drops the GPT: the rest is freed).
Parameter names stay the full GPT's (``blocks.5.attn.qkv_proj.weight``), so the state dicts of all
stages together are a GPT state dict: checkpoints move between pipelined and unsplit runs.

Training order on every pipeline rank, for each batch:
    pipe.step(input_ids, targets)  ->  pipe.sync_tied_gradients()  ->  pipe.clip_gradients(max_norm)
    ->  optimizer.step()  ->  optimizer.zero_grad()
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from model.gpt import GPT


def split_blocks(n_layers: int, n_stages: int, sizes: list[int] | None = None) -> list[range]:
    """The block indices of each stage: ``sizes`` blocks each if given, else as even as possible.

    The extra blocks of an uneven split go to the earliest stages. The last stage already carries
    the head, whose matmul over the vocabulary (and the loss) costs about five blocks of GPT-2
    124M; the first carries only the embedding lookup, which costs almost nothing to compute.
    """
    if sizes is None:
        if not 1 <= n_stages <= n_layers:
            raise ValueError(f"n_stages: {n_stages} stages need between 1 and n_layers={n_layers}")
        base, extra = divmod(n_layers, n_stages)
        sizes = [base + (stage < extra) for stage in range(n_stages)]
    elif len(sizes) != n_stages:
        raise ValueError(f"sizes: {len(sizes)} entries for {n_stages} stages")
    elif min(sizes) < 1:
        raise ValueError(f"sizes: every stage needs at least one block, got {sizes}")
    elif sum(sizes) != n_layers:
        raise ValueError(f"sizes: {sizes} add up to {sum(sizes)} blocks, not n_layers={n_layers}")
    starts = [sum(sizes[:stage]) for stage in range(n_stages)]
    return [range(start, start + size) for start, size in zip(starts, sizes)]


class Stage(nn.Module):
    """Blocks ``blocks`` of ``model`` (its own modules, not copies), with the embeddings if they are
    the first and the final norm and head if they are the last.

    The modules keep their attribute names in the GPT (``blocks`` is keyed by the block's index in
    the full model), so the stage's state dict keys are the GPT's. Training only: no KV cache, no
    padding mask, positions 0..T-1. Activation checkpointing is applied from outside, as to the GPT
    (``parallel.checkpoint_blocks`` wraps the blocks wherever they sit, names unchanged).
    """

    def __init__(self, model: GPT, blocks: range):
        super().__init__()
        self.is_first, self.is_last = blocks.start == 0, blocks.stop == model.config.n_layers
        if self.is_first:
            self.tok_emb, self.pos_emb, self.drop_emb = model.tok_emb, model.pos_emb, model.drop_emb
        self.rope = model.rope  # every stage rotates its own queries and keys
        self.blocks = nn.ModuleDict({str(index): model.blocks[index] for index in blocks})
        if self.is_last:
            self.final_norm, self.out_head = model.final_norm, model.out_head
            self.register_buffer("vocab_padding", model.vocab_padding, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids on the first stage, else (B, T, emb_dim) hidden states -> the next
        stage's input, or on the last stage the (B, T, padded_vocab_size) logits."""
        position_ids = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        if self.is_first:
            # GPT's own code, run on this stage's modules (they have the same names), so the two
            # cannot drift apart.
            x, rotation = GPT.embed(self, x, position_ids)
        else:
            rotation = self.rope(position_ids) if self.rope is not None else None
        for block in self.blocks.values():
            x = block(x, rotation)
        if self.is_last:
            # Padded logits: the padding columns are -inf, so a cross-entropy over all of them is the
            # one over the real vocabulary, and no slice is needed.
            return GPT._padded_logits(self, self.final_norm(x))
        return x


class LocalStages(nn.Module):
    """One rank's stages as one module under the GPT's names (``tok_emb``, ``blocks.<i>``, ...):
    what its optimizers update and what it checkpoints. It only holds the stages' modules; the
    schedule runs the stages themselves."""

    def __init__(self, stages: list[Stage]):
        super().__init__()
        self.blocks = nn.ModuleDict()
        for stage in stages:
            for name, child in stage.named_children():
                if name == "blocks":
                    self.blocks.update(child)
                else:
                    self.add_module(name, child)


ScheduleName = Literal["gpipe", "1f1b", "interleaved_1f1b"]


class PipelinedGPT:
    """This pipeline rank's stages of ``model`` and the schedule that runs them.

    ``pp_group`` holds the pipeline's ranks in stage order (None: every rank), ``pp_rank`` this one.
    ``n_stages = pp_size * chunks_per_rank``; stage i runs on pipeline rank i % pp_size (the "loop"
    placement that the schedules assume), so rank 0 holds the first stage and rank pp_size - 1 the
    last. GPipe and 1F1B take one stage per rank; interleaved 1F1B two or more, which shrinks the
    pipeline's idle bubble by that factor for as many more activation transfers.

    ``loss_fn(logits, targets)`` is one micro-batch's loss, backpropagated as is: the gradients are
    the sum over micro-batches of its gradients (so a loss summed over predictions and scaled by a
    constant gives the same gradients as without the pipeline). Every step must have the same batch
    shape, its B a multiple of ``n_microbatches``: the stages learn the shapes of the activations
    they exchange from the first step.
    """

    def __init__(
        self,
        model: GPT,
        *,
        pp_rank: int,
        pp_size: int,
        pp_group: dist.ProcessGroup | None,
        device: torch.device,
        schedule: ScheduleName,
        n_microbatches: int,
        chunks_per_rank: int = 1,
        sizes: list[int] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ):
        if (schedule == "interleaved_1f1b") != (chunks_per_rank >= 2):
            raise ValueError(f"chunks_per_rank: {schedule} needs {'2 or more' if chunks_per_rank < 2 else '1'}, "
                             f"got {chunks_per_rank}")
        n_stages = pp_size * chunks_per_rank
        ranges = split_blocks(model.config.n_layers, n_stages, sizes)
        indices = range(pp_rank, n_stages, pp_size)
        self.stages = nn.ModuleList(Stage(model, ranges[index]) for index in indices).to(device)
        self.module = LocalStages(list(self.stages))
        self.pp_group = pp_group
        self.holds_first, self.holds_last = pp_rank == 0, pp_rank == pp_size - 1
        pipe_stages = [PipelineStage(stage, index, n_stages, device, group=pp_group)
                       for stage, index in zip(self.stages, indices)]
        # scale_grads=False: by default the schedules divide the gradients by n_microbatches, as
        # for a mean loss per micro-batch; the loss we are given is already scaled as wanted.
        if schedule == "interleaved_1f1b":
            self.schedule = ScheduleInterleaved1F1B(pipe_stages, n_microbatches, loss_fn=loss_fn, scale_grads=False)
        else:
            single = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
            self.schedule = single(pipe_stages[0], n_microbatches, loss_fn=loss_fn, scale_grads=False)

        # The tied embedding/head matrix. Where one rank holds both the first and the last stage,
        # they share one parameter. Otherwise the first rank's tok_emb.weight and the last rank's
        # out_head.weight are two copies, equal at the start (same seed, same full model). The
        # tied matrix's gradient is the sum of the gradients through both uses, so both ranks
        # all-reduce (sum) their copy's gradient over a group of just the two of them: each copy
        # then gets the total gradient, hence the same optimizer update, and they stay equal.
        self.tied_copy: nn.Parameter | None = None
        self.tied_group: dist.ProcessGroup | None = None
        if pp_size > 1 and (self.holds_first or self.holds_last):
            self.tied_copy = self.stages[0].tok_emb.weight if self.holds_first else self.stages[-1].out_head.weight
            pp_ranks = dist.get_process_group_ranks(pp_group or dist.group.WORLD)
            # Local synchronisation: only the two members call this, so it works whatever other
            # pipelines (data-parallel replicas) the job runs.
            self.tied_group = dist.new_group([pp_ranks[0], pp_ranks[-1]], use_local_synchronization=True)

    def parameters(self) -> list[nn.Parameter]:
        """This rank's parameters, each once: what its optimizer updates."""
        return list(self.stages.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's part of the GPT's state dict, under the GPT's names."""
        return {key: value for stage in self.stages for key, value in stage.state_dict().items()}

    def step(self, input_ids: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """Forward and backward of one local batch, cut into micro-batches; every pipeline rank calls
        it, the first with ``input_ids`` (B, T), the last with ``targets``. Gradients add up in
        ``.grad`` (zero them between batches). -> the sum of the micro-batches' losses on the last
        rank, None elsewhere."""
        if self.holds_first and input_ids is None:
            raise ValueError("input_ids: the rank holding the first stage must pass the batch")
        if self.holds_last and targets is None:
            raise ValueError("targets: the rank holding the last stage must pass the targets")
        losses: list[torch.Tensor] | None = [] if self.holds_last else None
        inputs = (input_ids,) if self.holds_first else ()
        self.schedule.step(*inputs, target=targets, losses=losses, return_outputs=False)
        return torch.stack(losses).sum().detach() if losses is not None else None

    def sync_tied_gradients(self) -> None:
        """Give both copies of the tied embedding/head the total gradient (see ``__init__``). Call it
        once after the last ``step`` of an accumulation, before clipping: twice would double count."""
        if self.tied_group is not None:
            dist.all_reduce(self.tied_copy.grad, group=self.tied_group)

    def clip_gradients(self, max_norm: float) -> float:
        """Clip the gradient norm of the whole pipeline's parameters to ``max_norm`` (0: measure only);
        return the norm before. Every pipeline rank must call it, after ``sync_tied_gradients``."""
        # Each rank's sum of squares, the tied matrix's counted on the first rank only.
        counted = [param.grad for param in self.parameters()
                   if param.grad is not None and not (self.holds_last and param is self.tied_copy)]
        squares = torch.nn.utils.get_total_norm(counted) ** 2
        dist.all_reduce(squares, group=self.pp_group)
        norm = squares.sqrt()
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(self.parameters(), max_norm, norm)
        return float(norm)


def gather_full_model(model: GPT, local: nn.Module, pp_group: dist.ProcessGroup | None) -> GPT:
    """``model``, the full GPT this rank's stages were cut from, with every other rank's stages'
    current weights copied in: for evaluation and sample generation, which need the whole model.
    Every pipeline rank calls it. (The memory it takes is the weights' alone, a quarter or less of
    what training the whole model on one worker takes with its gradients and AdamW's moments.)"""
    parts: list[dict[str, torch.Tensor] | None] = [None] * dist.get_world_size(pp_group)
    dist.all_gather_object(parts, {name: tensor.detach().cpu() for name, tensor in local.state_dict().items()},
                           group=pp_group)
    with torch.no_grad():
        own = model.state_dict()
        for part in parts:
            for name, tensor in part.items():
                own[name].copy_(tensor)
    return model
