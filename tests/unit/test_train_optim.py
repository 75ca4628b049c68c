"""The learning-rate schedule and the optimizer's parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import preset
from model.gpt import GPT
from model.optim import OptimConfig, WarmupCosine, build_optimizer, learning_rate_schedule


def test_warmup_is_linear_from_the_first_step():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert [schedule(step) for step in range(10)] == pytest.approx([(step + 1) / 10 for step in range(10)])


def test_cosine_falls_from_peak_to_floor_and_stays():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the cosine
    assert schedule(85) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert schedule(110) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1)
    decay = [schedule(step) for step in range(10, 111)]
    assert all(later <= earlier for earlier, later in zip(decay, decay[1:]))


def test_no_warmup_starts_at_the_peak():
    schedule = learning_rate_schedule(OptimConfig(warmup_steps=0, min_lr_ratio=0.0), total_steps=4)
    assert [schedule(step) for step in range(5)] == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                                   0.5 - 0.5 * math.cos(math.pi / 4), 0.0])


def test_optimizer_decays_matrices_only_and_covers_every_parameter_once():
    model = GPT(preset("tiny"))
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05, beta2=0.99))
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and not_decayed["weight_decay"] == 0.0
    assert decayed["betas"] == (0.9, 0.99)
    assert all(p.dim() == 2 for p in decayed["params"])
    assert model.tok_emb.weight in [p for p in not_decayed["params"]]  # embedding (and tied head): no decay
    assert all(p.dim() == 1 for p in not_decayed["params"] if p is not model.tok_emb.weight
               and (model.pos_emb is None or p is not model.pos_emb.weight))
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_frozen_parameters_are_left_out():
    model = GPT(preset("tiny"))
    for param in model.blocks[0].parameters():
        param.requires_grad = False
    optimizer = build_optimizer(model, OptimConfig())
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in model.blocks[0].parameters()}
    assert isinstance(optimizer, torch.optim.AdamW)
