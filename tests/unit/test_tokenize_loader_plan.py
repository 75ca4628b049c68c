"""The loader's read plan (model/data.py) on real token shards, with no Ray: who reads what, in which order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from model.data import (
    IGNORE_INDEX,
    MIXTURE_BLOCK,
    LoaderConfig,
    TokenSourceConfig,
    _RowStream,
    model_batch,
    rank_intervals,
    read_worker_part,
    sources,
    step_counts,
)
from pipeline.config import ConfigError
from pipeline.tokenize import TokenizeConfig
from tests.unit.test_tokenize import build_without_ray, documents


@pytest.fixture(scope="module")
def token_dir(corpus, tmp_path_factory) -> str:
    """About 670 training windows of 32 tokens in 3 shards (one chunk each), and a val split."""
    out = tmp_path_factory.mktemp("alice-tokens")
    texts = (corpus / "text" / "gutenberg-11-alice.txt").read_text().split("\n\n")[:400]
    build_without_ray(documents(texts, "alice"), out, TokenizeConfig(context_length=32, shard_tokens=8_000, val_fraction=0.1))
    return str(out)


def train_row(root: str, epoch: int, *, global_batch: int = 24, steps: int = 60, seed: int = 7, stages: int = 1) -> dict:
    return {"source": 0, "root": root, "seed": seed, "stages": stages, "split": "train", "weights": [1.0],
            "global_batch": global_batch, "steps": steps, "epoch": epoch}


def val_row(root: str, limit: int = -1) -> dict:
    return {"source": 0, "root": root, "seed": 7, "stages": 1, "split": "val", "limit": limit}


def rows_read(row: dict, rank: int, world_size: int) -> list[tuple[int, int]]:
    """(step, sequence id) of every row ``rank`` of ``world_size`` reads from one plan row."""
    tables = list(read_worker_part(pa.Table.from_pylist([row]), rank, world_size))
    return [(step, sequence) for table in tables
            for step, sequence in zip(table["step"].to_pylist(), table["sequence_id"].to_pylist())]


def test_every_step_has_the_same_global_batch_for_any_number_of_workers(token_dir):
    total = sources(LoaderConfig(sources=[TokenSourceConfig(path=token_dir)]))[0][2]["splits"]["train"]["sequences"]
    whole = rows_read(train_row(token_dir, 0), 0, 1)
    assert len(whole) == total and len({sequence for _, sequence in whole}) == total  # one epoch, each row once
    assert [step for step, _ in whole] == sorted(step for step, _ in whole)  # in step order
    assert {step for step, _ in whole} == set(range(total // 24 + 1))  # 24 rows a step
    for world_size in (2, 3, 4):
        parts = [rows_read(train_row(token_dir, 0), rank, world_size) for rank in range(world_size)]
        # Rank r takes the r-th part of each step: the parts side by side are the one-worker stream.
        by_step = [row for step in range(total // 24 + 1) for part in parts for row in part if row[0] == step]
        assert by_step == whole
        assert {sum(1 for row in part if row[0] == 3) for part in parts} == {24 // world_size}


def test_pipeline_workers_of_one_replica_read_the_same_rows(token_dir):
    row = train_row(token_dir, 0, stages=2)
    assert rows_read(row, 0, 4) == rows_read(row, 1, 4) != rows_read(row, 2, 4) == rows_read(row, 3, 4)
    assert rows_read(row, 0, 4) == rows_read(train_row(token_dir, 0), 0, 2)


def test_the_order_changes_every_epoch_and_repeats_with_the_seed(token_dir):
    first, second = rows_read(train_row(token_dir, 0), 0, 1), rows_read(train_row(token_dir, 1), 0, 1)
    assert sorted(s for _, s in first) == sorted(s for _, s in second)
    assert [s for _, s in first] != [s for _, s in second]
    assert rows_read(train_row(token_dir, 1), 0, 1) == second
    assert rows_read(train_row(token_dir, 1, seed=8), 0, 1) != second
    assert second[0][0] == len(first) // 24  # the second epoch goes on where the first stopped


def test_validation_is_every_val_row_in_manifest_order_for_any_world_size(token_dir):
    whole = [s for _, s in rows_read(val_row(token_dir), 0, 1)]
    assert whole == sorted(whole) and len(whole) > 3
    for world_size in (2, 3):
        joined = [s for rank in range(world_size) for _, s in rows_read(val_row(token_dir), rank, world_size)]
        assert joined == whole
    assert [s for _, s in rows_read(val_row(token_dir, limit=3), 0, 1)] == whole[:3]


def test_mixture_draws_follow_the_weights_and_are_the_same_everywhere():
    counts = step_counts([3.0, 1.0], 8, 20 * MIXTURE_BLOCK, seed=5)
    assert counts.shape == (20 * MIXTURE_BLOCK, 2) and set(counts.sum(axis=1)) == {8}
    assert abs(counts[:, 0].sum() / counts.sum() - 0.75) < 0.01
    assert np.array_equal(step_counts([3.0, 1.0], 8, 100, seed=5), counts[:100])  # a prefix of the same draws
    assert not np.array_equal(step_counts([3.0, 1.0], 8, 100, seed=6), counts[:100])
    assert step_counts([1.0], 8, 3, seed=5).tolist() == [[8], [8], [8]]


def test_rank_intervals_cut_each_step_into_equal_parts_across_sources():
    counts = np.array([[5, 3], [2, 6], [8, 0]])  # 8 rows a step from two sources
    parts = {(rank, source): rank_intervals(counts, source, rank, 2) for rank in (0, 1) for source in (0, 1)}
    starts, ends, steps = parts[0, 0]  # rank 0: rows 0-3 of each step's batch
    assert (starts.tolist(), ends.tolist(), steps.tolist()) == ([0, 5, 7], [4, 7, 11], [0, 1, 2])
    starts, ends, steps = parts[1, 1]  # rank 1: rows 4-7, source 1 starting at row 5, 2 and 8
    assert (starts.tolist(), ends.tolist(), steps.tolist()) == ([0, 5], [3, 9], [0, 1])
    for step in range(3):
        taken = [sum(int(e - s) for s, e, k in zip(*parts[rank, source]) if k == step) for rank in (0, 1) for source in (0, 1)]
        assert taken[0] + taken[1] == taken[2] + taken[3] == 4


def fake_batches(steps: list[int], size: int):
    steps = torch.tensor(steps)
    for start in range(0, len(steps), size):
        ids = torch.arange(start, min(len(steps), start + size))
        yield {"input_ids": ids[:, None].repeat(1, 3), "sequence_id": ids, "step": steps[start : start + size]}


def test_a_row_stream_takes_each_step_and_skips_the_steps_before():
    tags = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    stream = _RowStream(fake_batches(tags, 5), "s")
    assert [i for part in stream.take(0, 3) for i in part["sequence_id"].tolist()] == [0, 1, 2]
    resumed = _RowStream(fake_batches(tags, 5), "s")  # a resumed worker: steps 0 and 1 are done
    assert [i for part in resumed.take(2, 3) for i in part["sequence_id"].tolist()] == [6, 7, 8]
    assert [i for part in resumed.take(3, 3) for i in part["sequence_id"].tolist()] == [9, 10, 11]


def test_a_used_up_stream_says_so():
    stream = _RowStream(fake_batches([0, 0, 0, 0], 5), "web")
    stream.take(0, 4)
    with pytest.raises(RuntimeError, match="'web': its plan is used up"):
        stream.take(1, 1)


def test_model_batch_shifts_targets_and_masks_the_padding():
    windows = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4, 5, 6, 7, 9, 9, 9, 0, 0, 0, 0, 0], pa.uint16()), 5)
    rows = pa.table({"sequence_id": [0, 1, 2], "tokens": windows, "n_tokens": pa.array([5, 2, 5], pa.int32()), "source": [0, 0, 1]})
    batch = model_batch(rows.slice(0, 2))  # a slice, as Ray hands batches
    assert batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [6, 7, 9, 9]]
    assert batch["targets"].tolist() == [[2, 3, 4, 5], [7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_sources_must_share_tokenizer_and_context_length_and_have_names(token_dir, tmp_path, corpus):
    other = tmp_path / "other"
    build_without_ray(documents(["a few words here"] * 50, "x"), other, TokenizeConfig(context_length=16))
    with pytest.raises(ConfigError, match="has another context_length"):
        sources(LoaderConfig(sources=[TokenSourceConfig(path=token_dir), TokenSourceConfig(path=str(other))]))
    with pytest.raises(ConfigError, match="same name"):
        sources(LoaderConfig(sources=[TokenSourceConfig(path=token_dir), TokenSourceConfig(path=token_dir)]))
    with pytest.raises(ConfigError, match="at least one"):
        sources(LoaderConfig())
