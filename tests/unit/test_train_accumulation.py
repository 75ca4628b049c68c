"""Gradient accumulation: how many micro-steps, and that they add up to exactly one big batch."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from model.config import preset
from model.gpt import GPT
from model.train import NonFiniteSteps, Worker, _train_step
from model.train_config import BatchConfig, accumulation_steps
from pipeline.config import ConfigError

IGNORE = -100


@pytest.mark.parametrize(
    ("batch", "sequence_length", "world_size", "expected"),
    [
        (BatchConfig(global_batch_tokens=524_288, micro_batch_size=16), 1024, 8, 4),  # GPT-2 124M's 0.5M tokens
        (BatchConfig(global_batch_tokens=8192, micro_batch_size=8), 128, 2, 4),
        (BatchConfig(global_batch_size=32, micro_batch_size=8), 64, 1, 4),
        (BatchConfig(global_batch_size=32, micro_batch_size=8), 64, 4, 1),
    ],
)
def test_accumulation_steps_fill_the_global_batch(batch, sequence_length, world_size, expected):
    assert accumulation_steps(batch, sequence_length, world_size) == expected


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (BatchConfig(global_batch_tokens=1000, micro_batch_size=8), "not a multiple of the sequence length"),
        (BatchConfig(global_batch_size=24, micro_batch_size=8), "not a whole number of micro-batches"),
    ],
)
def test_batches_that_do_not_divide_are_refused(batch, message):
    with pytest.raises(ConfigError, match=message):
        accumulation_steps(batch, sequence_length=64, data_ranks=2)


def test_exactly_one_of_tokens_and_sequences():
    with pytest.raises(ValueError, match="exactly one"):
        BatchConfig(global_batch_tokens=4096, global_batch_size=32)
    with pytest.raises(ValueError, match="exactly one"):
        BatchConfig()


class LanguageModeling:
    """The parts of a task that a training step uses: a loss summed over predictions, and their count."""

    def loss_sum(self, model, batch):
        logits, _ = model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE, reduction="sum")

    def prediction_count(self, batch):
        return (batch["targets"] != IGNORE).sum()


def micro_batches() -> list[dict[str, torch.Tensor]]:
    """Four micro-batches with different numbers of real targets, as padded shard tails give."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for padded in (0, 5, 17, 30):
        tokens = torch.randint(0, 512, (2, 33), generator=generator)
        targets = tokens[:, 1:].clone()
        targets[0, targets.shape[1] - padded :] = IGNORE
        batches.append({"input_ids": tokens[:, :-1], "targets": targets})
    return batches


def one_step(batches: list[dict[str, torch.Tensor]]) -> tuple[float, GPT]:
    torch.manual_seed(0)
    model = GPT(preset("tiny", context_length=32))
    # Plain SGD with learning rate 1: the parameters move by exactly the gradient. (Adam's first step
    # is about lr * sign(gradient), which float rounding flips for gradients near zero.)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer.param_groups[0]["peak_lr"] = 1.0
    predictions = float(sum(LanguageModeling().prediction_count(batch) for batch in batches))
    worker = Worker(rank=0, world_size=1, device=torch.device("cpu"), autocast=nullcontext, data_rank=0, data_ranks=1)
    loss, _, applied = _train_step(model, [optimizer], LanguageModeling(), batches, predictions, worker, 1.0,
                                   grad_clip=0.0)
    assert applied
    return loss, model


def test_four_micro_steps_equal_one_step_on_the_whole_batch():
    batches = micro_batches()
    whole = {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]}
    accumulated_loss, accumulated = one_step(batches)
    whole_loss, at_once = one_step([whole])

    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-6)
    for (name, a), b in zip(accumulated.named_parameters(), at_once.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_averaging_the_micro_batch_means_would_be_wrong():
    """The bug the loop avoids: with unequal target counts the mean of means is not the mean."""
    batches = micro_batches()
    torch.manual_seed(0)
    model = GPT(preset("tiny", context_length=32))
    task = LanguageModeling()
    mean_of_means = sum(task.loss_sum(model, b) / task.prediction_count(b) for b in batches) / len(batches)
    true_mean = sum(task.loss_sum(model, b) for b in batches) / sum(task.prediction_count(b) for b in batches)
    assert abs(float(mean_of_means) - float(true_mean)) > 1e-4
    loss, _ = one_step(copy.deepcopy(batches))
    assert loss == pytest.approx(float(true_mean), rel=1e-6)


def test_a_step_with_a_non_finite_loss_is_skipped_and_leaves_the_weights():
    torch.manual_seed(0)
    model = GPT(preset("tiny", context_length=32))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer.param_groups[0]["peak_lr"] = 1.0
    with torch.no_grad():
        model.blocks[1].mlp.up_proj.weight[0, 0] = float("inf")  # overflows to a NaN loss
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    batches = micro_batches()
    predictions = float(sum(LanguageModeling().prediction_count(batch) for batch in batches))
    worker = Worker(rank=0, world_size=1, device=torch.device("cpu"), autocast=nullcontext, data_rank=0, data_ranks=1)
    loss, grad_norm, applied = _train_step(model, [optimizer], LanguageModeling(), batches, predictions, worker,
                                           1.0, grad_clip=1.0)
    assert not applied and not (math.isfinite(loss) and math.isfinite(grad_norm))
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name], equal_nan=True, msg=name)
        assert param.grad is None  # cleared for the next step


def test_non_finite_steps_are_counted_and_too_many_in_a_row_stop_the_run():
    steps = NonFiniteSteps(limit=3)
    steps.skipped(10, float("nan"), float("nan"))
    steps.skipped(11, float("nan"), float("inf"))
    steps.applied()  # a good step in between: the count in a row starts over
    steps.skipped(13, float("inf"), 1.0)
    steps.skipped(14, float("nan"), float("nan"))
    with pytest.raises(RuntimeError, match=r"3 steps in a row .* step 15, loss nan"):
        steps.skipped(15, float("nan"), float("nan"))
    assert steps.total == 5
