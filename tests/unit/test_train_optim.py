"""The learning-rate schedules and the optimizers' parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import preset
from model.gpt import GPT
from model.optim import OptimConfig, Schedule, build_optimizers, learning_rate_schedule, set_learning_rate


def test_warmup_is_linear_from_the_first_step():
    for shape in ("cosine", "wsd"):
        schedule = Schedule(warmup_steps=10, total_steps=110, min_ratio=0.1, shape=shape)
        assert [schedule(step) for step in range(10)] == pytest.approx([(step + 1) / 10 for step in range(10)])


def test_cosine_falls_from_peak_to_floor_and_stays():
    schedule = Schedule(warmup_steps=10, total_steps=110, min_ratio=0.1)
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


@pytest.mark.parametrize("shape, expected", [
    ("linear", [0.1 + 0.9 * (1 - k / 20) for k in range(1, 21)]),
    ("1-sqrt", [0.1 + 0.9 * (1 - math.sqrt(k / 20)) for k in range(1, 21)]),
])
def test_wsd_holds_the_peak_then_cools_down_over_the_last_fraction(shape, expected):
    schedule = learning_rate_schedule(OptimConfig(warmup_steps=10, min_lr_ratio=0.1, schedule="wsd",
                                                  decay_fraction=0.2, decay_shape=shape), total_steps=100)
    assert [schedule(step) for step in range(10, 80)] == pytest.approx([1.0] * 70)  # stable
    assert [schedule(step) for step in range(80, 100)] == pytest.approx(expected)  # ends at the floor
    assert schedule(100) == pytest.approx(0.1)


def grouped(optimizers) -> dict[int, dict]:
    return {id(param): group for optimizer in optimizers for group in optimizer.param_groups for param in group["params"]}


def test_adamw_decays_matrices_and_optionally_the_embedding_covering_every_parameter_once():
    model = GPT(preset("tiny"))
    (adamw,) = build_optimizers(model, OptimConfig(weight_decay=0.05, beta2=0.99))
    groups = grouped([adamw])
    assert len(groups) == len(list(model.parameters()))  # the tied head is the embedding: once
    assert groups[id(model.blocks[0].attn.qkv_proj.weight)]["weight_decay"] == 0.05
    assert groups[id(model.tok_emb.weight)]["weight_decay"] == 0.0  # not decayed by default
    assert groups[id(model.blocks[0].norm1.weight)]["weight_decay"] == 0.0
    assert adamw.param_groups[0]["betas"] == (0.9, 0.99)
    (nanogpt_like,) = build_optimizers(model, OptimConfig(weight_decay=0.05, decay_embeddings=True))
    assert grouped([nanogpt_like])[id(model.tok_emb.weight)]["weight_decay"] == 0.05


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = GPT(preset("tiny"))
    adamw, muon = build_optimizers(model, OptimConfig(name="muon", learning_rate=3e-3, muon_learning_rate=0.02))
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    hidden = {id(p) for block in model.blocks for p in block.parameters() if p.dim() == 2}
    assert {id(p) for group in muon.param_groups for p in group["params"]} == hidden
    rest = {id(p) for group in adamw.param_groups for p in group["params"]}
    assert id(model.tok_emb.weight) in rest and not rest & hidden
    assert len(hidden) + len(rest) == len(list(model.parameters()))
    set_learning_rate([adamw, muon], 0.5)  # each group at half its own peak
    assert {group["lr"] for group in adamw.param_groups} == {1.5e-3}
    assert {group["lr"] for group in muon.param_groups} == {0.01}


def test_a_muon_step_orthogonalises_the_update_of_a_matrix():
    torch.manual_seed(0)
    model = GPT(preset("tiny"))
    adamw, muon = build_optimizers(model, OptimConfig(name="muon", muon_momentum=0.0, muon_weight_decay=0.0))
    weight = model.blocks[0].mlp.up_proj.weight
    before = weight.detach().clone()
    logits, loss = model(torch.randint(0, 512, (8, 64)), torch.randint(0, 512, (8, 64)))  # a full-rank gradient
    loss.backward()
    gradient = torch.linalg.svdvals(weight.grad)
    muon.step()
    update = torch.linalg.svdvals(before - weight.detach())
    # Newton-Schulz flattens the spectrum: the gradient's singular values fall off steeply, the
    # update's stay near one value (five iterations lift all but the very smallest).
    assert torch.quantile(gradient / gradient.max(), 0.25) < 0.2
    assert torch.quantile(update / update.max(), 0.25) > 0.6


def test_frozen_parameters_are_left_out():
    model = GPT(preset("tiny"))
    for param in model.blocks[0].parameters():
        param.requires_grad = False
    for name in ("adamw", "muon"):
        optimizers = build_optimizers(model, OptimConfig(name=name))
        assert not grouped(optimizers).keys() & {id(p) for p in model.blocks[0].parameters()}


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_the_optimizers_resume_exactly_from_the_checkpointed_state(name, tmp_path):
    """Through the checkpoint path's own sharded files: a run stopped after two steps and resumed
    takes the same third and fourth steps as one never stopped."""
    from model.sharded_state import ShardedWriter, load_sharded

    config = OptimConfig(name=name, warmup_steps=0, schedule="wsd")
    batches = [torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(step)) for step in range(4)]

    def train(model, optimizers, steps):
        schedule = learning_rate_schedule(config, total_steps=4)
        for step in steps:
            _, loss = model(batches[step][:, :-1], batches[step][:, 1:])
            loss.backward()
            set_learning_rate(optimizers, schedule(step))
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    uninterrupted = GPT(preset("tiny"))
    optimizers = build_optimizers(uninterrupted, config)
    train(uninterrupted, optimizers, range(2))
    writer = ShardedWriter(asynchronous=True)  # the training steps below run while it writes
    writer.save(uninterrupted, optimizers, tmp_path / "state")
    train(uninterrupted, optimizers, range(2, 4))
    writer.wait()

    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    resumed = GPT(preset("tiny"))
    resumed_optimizers = build_optimizers(resumed, config)
    load_sharded(resumed, resumed_optimizers, tmp_path / "state")
    train(resumed, resumed_optimizers, range(2, 4))
    for (name_, a), b in zip(uninterrupted.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name_)
