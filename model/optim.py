"""The optimizers and the learning-rate schedule.

Optimizers (``optim.name``):
- ``adamw``: AdamW over every parameter; weight decay on the matrices of linear layers, and on the
  (tied) token embedding if ``decay_embeddings``.
- ``muon``: Muon (momentum, Nesterov, then Newton-Schulz orthogonalisation of each update, as in
  modded-nanogpt and nanochat; ``torch.optim.Muon``) for the 2-D weight matrices inside the
  transformer blocks, and AdamW, with its own learning rate, for everything else: the embeddings and
  the tied head, norm gains and biases. Muon orthogonalises a matrix's update, which suits hidden
  linear maps and not lookup tables or vectors.

Schedules (``optim.schedule``), both after a linear warmup:
- ``cosine``: a half cosine down to ``min_lr_ratio`` of the peak at the last step;
- ``wsd``: warmup-stable-decay: the peak until the last ``decay_fraction`` of the steps, then a
  cooldown to ``min_lr_ratio``, linear or ``1-sqrt`` (Hägele et al. 2024).

A schedule is a pure function of the optimizer step, as in nanoGPT: the step saved in a checkpoint
is all the scheduler state there is. Each parameter group keeps its own peak (``peak_lr``), and the
schedule's multiplier scales every group alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from model.gpt import Block
from pipeline.config import config_dataclass


@config_dataclass
class OptimConfig:
    name: Literal["adamw", "muon"] = "adamw"
    learning_rate: Annotated[float, Field(gt=0)] = 6e-4  # AdamW's peak, reached at the end of warmup
    # The floor of the schedule, as a fraction of the peak (10%, as in Chinchilla and nanoGPT).
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    warmup_steps: Annotated[int, Field(ge=0)] = 100
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2  # wsd: the share of steps that cool down
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt"  # wsd: the cooldown's shape
    # AdamW's weight decay: on the matrices of linear layers; on the token embedding (the tied head)
    # too if decay_embeddings. build-nanogpt decays every tensor of 2 or more dimensions, embedding
    # included (decay_embeddings: true).
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    decay_embeddings: bool = False
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.95  # lower than Adam's 0.999: steadier at LLM batch sizes
    eps: Annotated[float, Field(gt=0)] = 1e-8
    # Muon, for the hidden matrices: its own peak learning rate, momentum and weight decay.
    muon_learning_rate: Annotated[float, Field(gt=0)] = 0.02
    muon_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    muon_weight_decay: Annotated[float, Field(ge=0)] = 0.0
    # Clip the global gradient norm to this; 0 turns clipping off.
    grad_clip: Annotated[float, Field(ge=0)] = 1.0
    # A step whose loss or gradient norm is not finite is skipped; this many in a row stop the run.
    max_nonfinite_steps: Annotated[int, Field(ge=1)] = 5


@dataclass(frozen=True)
class Schedule:
    """Multiplier of each group's peak learning rate at each optimizer step (counted from 0).

    Warmup climbs linearly to 1 over ``warmup_steps`` steps (step 0 already trains, at 1/warmup).
    Then ``cosine`` falls along a half cosine to ``min_ratio`` at ``total_steps``; ``wsd`` stays at
    1 until the cooldown's first step, ``total_steps * (1 - decay_fraction)``, and falls from there
    to ``min_ratio`` at the last step. Past ``total_steps``: ``min_ratio``.
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float
    shape: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = 0.2
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_ratio
        if self.shape == "cosine":
            decay_steps = self.total_steps - self.warmup_steps
            if decay_steps <= 0:
                return self.min_ratio
            progress = (step - self.warmup_steps) / decay_steps
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        decay_start = max(self.warmup_steps, round(self.total_steps * (1 - self.decay_fraction)))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / (self.total_steps - decay_start)  # 1 at the last step
        remaining = 1 - progress if self.decay_shape == "linear" else 1 - math.sqrt(progress)
        return self.min_ratio + (1 - self.min_ratio) * remaining


def learning_rate_schedule(config: OptimConfig, total_steps: int) -> Schedule:
    return Schedule(config.warmup_steps, total_steps, config.min_lr_ratio, config.schedule, config.decay_fraction,
                    config.decay_shape)


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters by their treatment: ``hidden`` (2-D matrices inside the blocks),
    ``embeddings`` (embedding tables, the tied head with them), ``matrices`` (other 2-D weights,
    such as a classifier's head) and ``vectors`` (norm gains, biases)."""
    hidden = {id(param) for block in model.modules() if isinstance(block, Block)
              for param in block.parameters() if param.dim() == 2}
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    # The LM head is the tied embedding, also where a pipeline stage holds it alone (model/stages.py):
    # both copies must get the same update.
    embeddings |= {id(module.out_head.weight) for module in model.modules()
                   if isinstance(getattr(module, "out_head", None), nn.Linear)}
    groups: dict[str, list[nn.Parameter]] = {"hidden": [], "embeddings": [], "matrices": [], "vectors": []}
    for param in model.parameters():  # each shared (tied) tensor once
        if not param.requires_grad:
            continue
        if id(param) in hidden:
            groups["hidden"].append(param)
        elif id(param) in embeddings:
            groups["embeddings"].append(param)
        elif param.dim() >= 2:
            groups["matrices"].append(param)
        else:
            groups["vectors"].append(param)
    return groups


def build_optimizers(model: nn.Module, config: OptimConfig) -> list[torch.optim.Optimizer]:
    """The optimizers that together update every trainable parameter once (see the module doc)."""
    groups = parameter_groups(model)
    adamw_groups = [
        {"params": groups["matrices"], "weight_decay": config.weight_decay},
        {"params": groups["embeddings"], "weight_decay": config.weight_decay if config.decay_embeddings else 0.0},
        {"params": groups["vectors"], "weight_decay": 0.0},
    ]
    if config.name == "adamw":
        adamw_groups[0]["params"] = groups["hidden"] + groups["matrices"]
    optimizers = [_adamw([group for group in adamw_groups if group["params"]], config)]
    if config.name == "muon" and groups["hidden"]:
        muon = torch.optim.Muon(groups["hidden"], lr=config.muon_learning_rate, momentum=config.muon_momentum,
                                weight_decay=config.muon_weight_decay, nesterov=True,
                                # Scales each update to AdamW's typical RMS (Moonshot's rule), so one
                                # rate fits matrices of any shape.
                                adjust_lr_fn="match_rms_adamw")
        optimizers.append(muon)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["peak_lr"] = group["lr"]
    return optimizers


def _adamw(groups: list[dict], config: OptimConfig) -> torch.optim.AdamW:
    on_cuda = all(param.is_cuda for group in groups for param in group["params"])
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), eps=config.eps,
                             fused=on_cuda)


def set_learning_rate(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    """Every group at ``multiplier`` times its own peak."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * multiplier
