"""LoRA (Hu et al. 2021), as in the appendix of *Build a Large Language Model (From Scratch)*.

A frozen weight W (out x in) is adapted by a low-rank update: y = x Wᵀ + (alpha / rank) · x Aᵀ Bᵀ,
with A (rank x in) random and B (out x rank) zero at the start, so the adapted model begins exactly
as the base model. Only A and B train: for a d x d projection, 2·rank·d parameters instead of d².

``LoRALinear`` keeps the wrapped layer's ``weight`` and ``bias`` under their own names, so the
model's state dict is the base model's plus ``lora_a`` / ``lora_b`` entries, and ``merge_lora``
folds B·A into W for export and generation, leaving plain ``nn.Linear`` layers.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import config_dataclass

# The projections of model/gpt.py, by their attribute names.
PROJECTIONS = ("qkv_proj", "out_proj", "gate_proj", "up_proj", "down_proj")


@config_dataclass
class LoRAConfig:
    enabled: bool = False
    rank: Annotated[int, Field(ge=1)] = 16
    alpha: Annotated[float, Field(gt=0)] = 16.0
    # Which projections of every block get adapters: any of qkv_proj, out_proj (attention),
    # gate_proj, up_proj, down_proj (MLP). Names a model lacks (gate_proj in GELU MLPs) are skipped.
    targets: list[str] = field(default_factory=lambda: list(PROJECTIONS))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.targets) - set(PROJECTIONS))
        if unknown:
            raise ValueError(f"targets: unknown projection(s) {unknown}; choose from {list(PROJECTIONS)}")
        if not self.targets:
            raise ValueError("targets: name at least one projection")


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a trainable low-rank update; shares the wrapped layer's parameters."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # no fresh weight: take the base layer's own tensors
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        # Kaiming-uniform A as nn.Linear initialises its weight; B = 0 makes the update start at zero.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scaling * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        """A plain linear layer computing the same function: W + scaling · B·A."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.scaling * (self.lora_b @ self.lora_a))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freeze every parameter of ``model`` and wrap the target projections with adapters, which
    alone stay trainable (a caller may unfreeze more, e.g. a new classification head). Returns the
    names of the wrapped layers."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for target in config.targets:
            child = getattr(module, target, None)
            if isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                setattr(module, target, LoRALinear(child, config.rank, config.alpha))
                wrapped.append(f"{name}.{target}" if name else target)
    if not wrapped:
        raise ValueError(f"no projection named {config.targets} in the model")
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight, in place: the model computes the same function with plain
    linear layers and no LoRA parameters (for export and fast generation)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model


def is_lora_parameter(name: str) -> bool:
    return name.endswith(".lora_a") or name.endswith(".lora_b")


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
