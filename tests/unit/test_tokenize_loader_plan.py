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
    epoch_slices,
    mixture_counts,
    model_batch,
    read_slice,
    rows_drawn,
    sources,
    worker_slices,
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


def plan_row(root: str, epoch: int, split: str = "train", seed: int = 7, limit: int = -1) -> dict:
    return {"source": 0, "root": root, "split": split, "seed": seed, "shuffle": split == "train", "limit": limit, "epoch": epoch}


def ids_read(row: dict, rank: int, world_size: int) -> list[int]:
    return [i for piece in worker_slices(row, rank, world_size) for i in read_slice(piece)["sequence_id"].to_pylist()]


def test_epoch_slices_cut_one_order_into_contiguous_parts():
    rows = np.array([5, 3, 7, 1], dtype=np.int64)
    parts = [epoch_slices(rows, (r * 4, r * 4 + 4), [1, 2]) for r in range(4)]
    order = np.random.default_rng([1, 2]).permutation(4)
    flat = [(chunk, i) for part in parts for chunk, start, end in part for i in range(start, end)]
    expected = [(int(chunk), i) for chunk in order for i in range(rows[chunk])][:16]
    assert flat == expected


def test_each_worker_gets_an_equal_disjoint_part_of_every_epoch(token_dir):
    manifest = sources(LoaderConfig(sources=[TokenSourceConfig(path=token_dir)]))[0][2]
    total = manifest["splits"]["train"]["sequences"]
    assert len(manifest["splits"]["train"]["shards"]) == 3
    for world_size in (1, 2, 3):
        parts = [ids_read(plan_row(token_dir, 0), rank, world_size) for rank in range(world_size)]
        assert {len(part) for part in parts} == {total // world_size}
        everything = [i for part in parts for i in part]
        assert len(set(everything)) == len(everything)  # sequence ids are unique within a split


def test_the_order_changes_every_epoch_and_repeats_with_the_seed(token_dir):
    first, second = ids_read(plan_row(token_dir, 0), 0, 1), ids_read(plan_row(token_dir, 1), 0, 1)
    assert sorted(first) == sorted(second) and first != second
    assert ids_read(plan_row(token_dir, 1), 0, 1) == second
    assert ids_read(plan_row(token_dir, 1, seed=8), 0, 1) != second


def test_validation_is_every_val_row_in_manifest_order_for_any_world_size(token_dir):
    whole = ids_read(plan_row(token_dir, 0, "val"), 0, 1)
    assert whole == sorted(whole) and len(whole) > 3
    for world_size in (2, 3):
        joined = [i for rank in range(world_size) for i in ids_read(plan_row(token_dir, 0, "val"), rank, world_size)]
        assert joined == whole
    assert ids_read(plan_row(token_dir, 0, "val", limit=3), 0, 1) == whole[:3]


def test_mixture_draws_follow_the_weights_and_are_the_same_everywhere():
    counts = np.concatenate([mixture_counts([3.0, 1.0], 8, block, seed=5) for block in range(20)])
    assert counts.shape == (20 * MIXTURE_BLOCK, 2) and set(counts.sum(axis=1)) == {8}
    share = counts[:, 0].sum() / counts.sum()
    assert abs(share - 0.75) < 0.01
    assert np.array_equal(mixture_counts([3.0, 1.0], 8, 4, seed=5), counts[4 * MIXTURE_BLOCK : 5 * MIXTURE_BLOCK])
    assert not np.array_equal(mixture_counts([3.0, 1.0], 8, 4, seed=6), counts[4 * MIXTURE_BLOCK : 5 * MIXTURE_BLOCK])
    steps = 2 * MIXTURE_BLOCK + 100
    assert rows_drawn([3.0, 1.0], 8, steps, seed=5).tolist() == counts[:steps].sum(axis=0).tolist()
    assert rows_drawn([1.0], 8, steps, seed=5).tolist() == [8 * steps]


def fake_batches(total: int, size: int):
    for start in range(0, total, size):
        ids = torch.arange(start, min(total, start + size))
        yield {"input_ids": ids[:, None].repeat(1, 3), "sequence_id": ids}


@pytest.mark.parametrize("skip", [0, 3, 5, 12])
def test_a_resumed_row_stream_continues_where_the_first_stopped(skip):
    takes = [3, 0, 5, 1, 4, 2]
    continuous = _RowStream(fake_batches(40, 5), 0, "s")
    seen = [i for n in [skip] + takes for part in continuous.take(n) for i in part["sequence_id"].tolist()]
    resumed = _RowStream(fake_batches(40, 5), skip, "s")
    after = [i for n in takes for part in resumed.take(n) for i in part["sequence_id"].tolist()]
    assert after == seen[skip:]


def test_a_used_up_stream_says_so():
    stream = _RowStream(fake_batches(4, 5), 0, "web")
    stream.take(4)
    with pytest.raises(RuntimeError, match="'web': its plan is used up"):
        stream.take(1)


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
