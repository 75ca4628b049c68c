"""Evaluation pieces: HellaSwag scoring (raw and length-normalised), even shares, the progress line."""

from __future__ import annotations

import json
import math
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


def test_hellaswag_queries_are_built_and_cleaned_as_lm_eval_builds_them():
    from model.evaluate import hellaswag_query

    record = {"activity_label": "Making a sandwich", "ctx_a": "[header] How to make a sandwich [title] Get bread.",
              "ctx_b": "then you", "endings": ["[step] Spread butter  on it.", "eat it", "", "fly [title] away"]}
    query, endings = hellaswag_query(record)
    # By hand: "activity_label: ctx_a Ctx_b", " [title]" -> ". ", brackets removed, double spaces halved.
    assert query == "Making a sandwich: How to make a sandwich. Get bread. Then you"
    assert endings == [" Spread butter on it.", "eat it", "", "fly. away"]


def test_lm_eval_endings_are_the_tail_of_the_whole_text_and_normalised_by_characters(corpus):
    from model.evaluate import load_hellaswag
    from pipeline.tokenizer import load_tokenizer

    encoding = load_tokenizer("gpt2")
    path = corpus / "eval" / "hellaswag-val-1000.jsonl"
    (item,) = load_hellaswag(path, encoding, limit=1)
    record = json.loads(path.read_text().splitlines()[0])
    assert encoding.decode(item.context) == f"{record['activity_label']}: {record['ctx_a']} {record['ctx_b'].capitalize()}"
    for ending, tokens, length in zip(record["endings"], item.endings, item.lengths):
        assert encoding.decode(item.context + tokens).endswith(" " + ending.strip())
        assert length == len(ending.strip())
    (nanogpt,) = load_hellaswag(path, encoding, limit=1, style="build-nanogpt")
    assert encoding.decode(nanogpt.context) == record["ctx"] and nanogpt.lengths is None


def test_acc_norm_divides_by_characters_when_the_item_gives_them():
    # Log-probabilities under FixedPredictions, by hand: token 7 gets logit 5, token 5 logit 4, the
    # other 14 tokens 0.
    log_z = math.log(math.exp(5) + math.exp(4) + 14)
    ll7, ll5 = 5 - log_z, 4 - log_z
    # Ending 0: [7], 1 character; ending 1: [5, 5], 30 characters. In total ending 0 is likelier; per
    # character ending 1 is (per token, ending 0 would win again: ll7 > ll5).
    item = HellaSwagItem(context=[1, 2], endings=[[7], [5, 5], [9], [9]], label=1, lengths=(1.0, 30.0, 1.0, 1.0))
    assert ll7 > 2 * ll5 and ll7 / 1 < 2 * ll5 / 30 and -log_z < 2 * ll5 / 30
    counts = score_hellaswag(FixedPredictions(), [(item, True)], torch.device("cpu"))
    assert counts.metrics() == {"hellaswag_acc": 0.0, "hellaswag_acc_norm": 1.0}


def test_token_bytes_add_up_to_the_texts_utf8_length_without_special_tokens(corpus):
    from model.evaluate import TokenBytes, bits_per_byte, loss_metrics
    from pipeline.tokenizer import load_tokenizer

    encoding = load_tokenizer("gpt2")
    text = "Naïve café — 日本語 text,\n\twith  spaces.🙂"
    tokens = encoding.encode_ordinary(text) + [encoding.eot_token]
    token_bytes = TokenBytes(encoding)
    assert token_bytes(torch.tensor(tokens)) == len(text.encode("utf-8"))  # <|endoftext|> is no text
    masked = torch.tensor(tokens[:3] + [-100] * (len(tokens) - 3))
    assert token_bytes(masked) == len(encoding.decode_bytes(tokens[:3]))
    assert bits_per_byte(math.log(2) * 10, 10) == pytest.approx(1.0)
    assert loss_metrics(30.0, 10.0, 20.0) == {"val_loss": 3.0, "val_bpb": pytest.approx(30.0 / (math.log(2) * 20))}
    assert loss_metrics(30.0, 10.0, 0.0) == {"val_loss": 3.0}
