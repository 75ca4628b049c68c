"""Deterministic splits (the book's) and resumable example batches."""

import json

import numpy as np
import pytest

from model.finetune.batches import ExampleBatches
from model.finetune.labeled import read_labeled
from model.finetune.splits import classification_splits, instruction_splits


@pytest.fixture(scope="module")
def sms(corpus):
    return read_labeled(corpus / "finetune" / "SMSSpamCollection.tsv", "text", "label", ["label", "text"])


def test_the_sms_set_balanced_by_downsampling_splits_70_10_20(sms):
    examples, labels = sms
    assert labels == ["ham", "spam"] and len(examples) == 5574
    splits = classification_splits(examples, [e.label for e in examples], [0.7, 0.1, 0.2], seed=123, balance=True)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1045, 149, 300)
    chosen = splits.train + splits.val + splits.test
    assert np.bincount([e.label for e in chosen]).tolist() == [747, 747]  # every spam, as many hams
    assert len({id(e) for e in chosen}) == 1494  # disjoint
    again = classification_splits(examples, [e.label for e in examples], [0.7, 0.1, 0.2], seed=123, balance=True)
    assert again == splits
    other = classification_splits(examples, [e.label for e in examples], [0.7, 0.1, 0.2], seed=124, balance=True)
    assert other.test != splits.test


def test_without_balancing_every_example_is_kept(sms):
    examples, _ = sms
    splits = classification_splits(examples, [e.label for e in examples], [0.7, 0.1, 0.2], seed=1, balance=False)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 5574


def test_instruction_data_splits_85_5_10_in_file_order(corpus):
    entries = json.loads((corpus / "finetune" / "instruction-data.json").read_text())
    splits = instruction_splits(entries)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (935, 55, 110)
    assert splits.train == entries[:935] and splits.test == entries[935:1045] and splits.val == entries[1045:]


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        instruction_splits(list(range(10)), [0.9, 0.2, 0.1])


def ids(batch):
    return batch["ids"]


def take(batches, n):
    iterator = iter(batches)
    return [next(iterator) for _ in range(n)]


def test_batches_cover_each_epoch_once_per_worker_and_resume_exactly():
    examples = list(range(23))
    collate = lambda items: {"ids": list(items)}  # noqa: E731
    workers = [ExampleBatches(examples, collate, 3, seed=7, rank=r, world_size=2) for r in range(2)]
    first_epoch = [item for w in workers for batch in take(w, 3) for item in batch["ids"]]
    assert len(first_epoch) == len(set(first_epoch)) == 18  # 11 per worker: 3 batches of 3, 2 left out
    assert workers[0].epochs_done() == 1.0

    uninterrupted = ExampleBatches(examples, collate, 3, seed=7)
    expected = take(uninterrupted, 12)  # crosses into the second epoch
    interrupted = ExampleBatches(examples, collate, 3, seed=7)
    before = take(interrupted, 5)
    resumed = ExampleBatches(examples, collate, 3, seed=7, state=interrupted.state_dict())
    assert before + take(resumed, 7) == expected
    assert expected[:7] != expected[7:14]  # each epoch its own order
    with pytest.raises(ValueError, match="written by 1 workers: resume it on as many"):
        ExampleBatches(examples, collate, 3, seed=7, rank=0, world_size=2, state=interrupted.state_dict())
