"""Shard assignment, shard files and the duplicate-id check."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.documents import table_from_rows
from pipeline.shards import ShardConfig, shard_count, shard_of, write_shard


def rows(ids, dropped=()):
    return table_from_rows(
        [
            {"id": i, "source": f"src-{i}", "text": None if i in dropped else f"text {i}",
             "drop_reason": "stage:reason" if i in dropped else None, "drop_value": 1.5 if i in dropped else None}
            for i in ids
        ]
    )


def test_shard_of_is_stable_and_spreads():
    ids = pa.array([f"doc-{i}" for i in range(1000)])
    first, second = shard_of(ids, 4).to_pylist(), shard_of(ids, 4).to_pylist()
    assert first == second
    assert all(150 < first.count(s) < 350 for s in range(4))


def test_shard_count_from_bytes():
    assert shard_count(0, 256) == 1
    assert shard_count(600_000_000, 256) == 3


def test_write_shard_sorts_splits_and_counts(tmp_path):
    group = rows(["c", "a", "b", "d"], dropped={"b"})
    group = group.append_column("_shard", pa.array([3] * 4, pa.int32()))
    summary = write_shard(group, str(tmp_path), 8, ShardConfig()).to_pylist()[0]
    assert summary["name"] == "part-00003-of-00008.parquet" and summary["rows"] == 3
    assert json.loads(summary["drops"]) == {"stage:reason": 1}
    kept = pq.read_table(tmp_path / "shards" / summary["name"])
    assert kept["id"].to_pylist() == ["a", "c", "d"]
    assert "drop_reason" not in kept.column_names and "html" not in kept.column_names
    audit = pq.read_table(tmp_path / "audit" / summary["name"]).to_pylist()
    assert audit == [{"id": "b", "url": None, "source": "src-b", "dump": None, "drop_reason": "stage:reason", "drop_value": 1.5}]
    assert summary["audit_sha256"] == hashlib.sha256((tmp_path / "audit" / summary["name"]).read_bytes()).hexdigest()


def test_write_shard_is_byte_identical_whatever_the_row_order(tmp_path):
    a = rows(["x", "y", "z"]).append_column("_shard", pa.array([0] * 3, pa.int32()))
    b = a.take([2, 0, 1])
    first = write_shard(a, str(tmp_path / "1"), 1, ShardConfig()).to_pylist()[0]
    second = write_shard(b, str(tmp_path / "2"), 1, ShardConfig()).to_pylist()[0]
    assert first["sha256"] == second["sha256"]


def test_a_repeated_id_keeps_its_first_row_and_counts_the_others(tmp_path):
    group = rows(["a", "b", "a", "a"]).append_column("_shard", pa.array([0] * 4, pa.int32()))
    group = group.set_column(group.schema.get_field_index("source"), "source", pa.array(["s2", "s1", "s1", "s3"]))
    summary = write_shard(group, str(tmp_path), 1, ShardConfig()).to_pylist()[0]
    kept = pq.read_table(tmp_path / "shards" / summary["name"])
    assert kept["id"].to_pylist() == ["a", "b"] and kept["source"].to_pylist() == ["s1", "s1"]
    assert json.loads(summary["drops"]) == {"read:duplicate_id": 2}
    audit = pq.read_table(tmp_path / "audit" / summary["name"]).to_pylist()
    assert [(row["source"], row["drop_reason"]) for row in audit] == [("s2", "read:duplicate_id"), ("s3", "read:duplicate_id")]
