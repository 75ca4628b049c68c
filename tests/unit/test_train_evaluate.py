"""Evaluation pieces: HellaSwag scoring (raw and length-normalised), even shares, the progress line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from model.evaluate import HellaSwagItem, pad_with_repeats, score_hellaswag, shard_evenly
from model.throughput import Throughput, progress_line

VOCAB = 16


class FixedPredictions(nn.Module):
    """Predicts the same next-token distribution everywhere: token 7 likeliest, then token 5."""

    config = SimpleNamespace(context_length=32)

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, VOCAB)
        logits[..., 7], logits[..., 5] = 5.0, 4.0
        return logits, None


def test_acc_norm_divides_by_the_ending_length():
    # Ending 1 is one fair token; ending 3 is four likely ones: less likely in total, more per token.
    item = HellaSwagItem(context=[1, 2, 3], endings=[[9], [5], [3, 3], [7, 7, 7, 7]], label=3)
    counts = score_hellaswag(FixedPredictions(), [(item, True)], torch.device("cpu"))
    assert (counts.items, counts.correct, counts.correct_norm) == (1, 0, 1)
    assert counts.metrics() == {"hellaswag_acc": 0.0, "hellaswag_acc_norm": 1.0}


def test_repeats_that_do_not_count_are_not_scored():
    right = HellaSwagItem(context=[1], endings=[[7], [9], [9], [9]], label=0)
    wrong = HellaSwagItem(context=[1], endings=[[7], [9], [9], [9]], label=1)
    counts = score_hellaswag(FixedPredictions(), [(right, True), (wrong, False)], torch.device("cpu"))
    assert (counts.items, counts.correct) == (1, 1)


def test_every_item_counts_once_across_workers_and_shares_are_even():
    items = list(range(10))
    shares = [shard_evenly(items, rank, 4) for rank in range(4)]
    assert {len(share) for share in shares} == {3}
    counted = sorted(item for share in shares for item, counts in share if counts)
    assert counted == items


def test_padding_repeats_the_last_item_uncounted():
    assert pad_with_repeats(["a", "b"], 4) == [("a", True), ("b", True), ("b", False), ("b", False)]
    with pytest.raises(RuntimeError, match="nothing to evaluate"):
        pad_with_repeats([], 1)


def test_throughput_and_progress_line():
    meter = Throughput(total_steps=100)
    meter.add_step(tokens=1000, seconds=0.5, data_wait=0.05)
    meter.add_step(tokens=1000, seconds=0.5, data_wait=0.0)
    figures = meter.take(step=10)
    assert figures == pytest.approx({"tokens_per_s": 2000.0, "data_wait_fraction": 0.05, "eta_s": 45.0})
    assert meter.take(step=10)["tokens_per_s"] == 0.0  # a new interval starts empty
    line = progress_line(10, 100, 3.14159, 6e-4, figures, mfu=0.4123)
    assert line == "step  10/100 | loss 3.1416 | lr 6.00e-04 | 2,000 tok/s | MFU 41.2% | data wait 5.0% | ETA 0m45s"
