"""The optimizer and its learning-rate schedule: AdamW, linear warmup, then cosine decay to a floor.

The schedule is a pure function of the optimizer step, as in nanoGPT: the step saved in a
checkpoint is all the scheduler state there is, and a resumed run sets exactly the learning rate
the uninterrupted run would have set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from model.gpt import configure_optimizers
from pipeline.config import config_dataclass


@config_dataclass
class OptimConfig:
    learning_rate: Annotated[float, Field(gt=0)] = 6e-4  # the peak, reached at the end of warmup
    # The floor of the cosine, as a fraction of the peak (10%, as in Chinchilla and nanoGPT).
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    warmup_steps: Annotated[int, Field(ge=0)] = 100
    # Applied to matrices only (see ``model.gpt.param_groups``).
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.95  # lower than Adam's 0.999: steadier at LLM batch sizes
    eps: Annotated[float, Field(gt=0)] = 1e-8
    # Clip the global gradient norm to this; 0 turns clipping off.
    grad_clip: Annotated[float, Field(ge=0)] = 1.0


@dataclass(frozen=True)
class WarmupCosine:
    """Multiplier of the peak learning rate at each optimizer step (counted from 0).

    Warmup climbs linearly to 1 over ``warmup_steps`` steps (step 0 already trains, at 1/warmup),
    then a half cosine falls to ``min_ratio`` at ``total_steps``, and stays there after.
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps <= 0 or step >= self.total_steps:
            return self.min_ratio
        progress = (step - self.warmup_steps) / decay_steps
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def learning_rate_schedule(config: OptimConfig, total_steps: int) -> WarmupCosine:
    return WarmupCosine(config.warmup_steps, total_steps, config.min_lr_ratio)


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the fused kernel where the parameters are on CUDA."""
    return configure_optimizers(
        model,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
