"""Clean-text Parquet shards and the audit of removed documents.

A build writes ``shards/`` and, optionally, ``audit/`` into its build folder; ``versions.py``
publishes them under a manifest. Determinism: every row goes to shard ``hash(id) % n_shards`` and
each shard is sorted by id, so the same rows give byte-identical files whatever the block layout
or number of workers.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipeline.config import config_dataclass
from pipeline.documents import alive_mask, with_drops
from pipeline.storage import write_bytes

BUILD_ONLY_COLUMNS = ("html", "drop_reason", "drop_value")
AUDIT_COLUMNS = ("id", "url", "source", "dump", "drop_reason", "drop_value")


@config_dataclass
class ShardConfig:
    target_mb: float = 256.0
    compression: str = "zstd"
    # Keep every removed document's id, url, reason and measured value in ``audit/``.
    write_audit: bool = True


# ---------------------------------------------------------------------------------------------
# Sharding


def shard_count(kept_text_bytes: int, target_mb: float) -> int:
    return max(1, math.ceil(kept_text_bytes / (target_mb * 1_000_000)))


def shard_of(ids: pa.ChunkedArray | pa.Array, n_shards: int) -> pa.Array:
    """A stable shard number per id (xxh64 of the id, modulo the shard count)."""
    return pa.array([xxhash.xxh64_intdigest(doc_id.encode()) % n_shards for doc_id in ids.to_pylist()], pa.int32())


def assign_shard(batch: pa.Table, n_shards: int) -> pa.Table:
    """``map_batches`` function adding the ``_shard`` column."""
    return batch.append_column("_shard", shard_of(batch["id"], n_shards))


def write_shard(group: pa.Table, folder: str, n_shards: int, config: ShardConfig) -> pa.Table:
    """``map_groups`` function: all rows of one shard -> its clean file and its audit file.

    Returns one row describing what it wrote, with the drop counts of its rows, so the driver
    assembles the manifest without another pass over the data.
    """
    shard = group["_shard"][0].as_py()
    group = _drop_repeated_ids(group.drop_columns(["_shard"]).sort_by([("id", "ascending"), ("source", "ascending")]))
    kept_mask = alive_mask(group)
    kept = group.filter(kept_mask).drop_columns([c for c in BUILD_ONLY_COLUMNS if c in group.column_names])
    dropped = group.filter(pc.invert(kept_mask))
    name = f"part-{shard:05d}-of-{n_shards:05d}.parquet"
    summary: dict[str, Any] = {"shard": shard, "name": name, "rows": len(kept)}
    summary["sha256"] = _write(f"{folder}/shards/{name}", kept, config) if len(kept) else None
    summary["audit_rows"] = len(dropped) if config.write_audit else 0
    summary["audit_sha256"] = None
    if config.write_audit and len(dropped):
        summary["audit_sha256"] = _write(f"{folder}/audit/{name}", dropped.select(list(AUDIT_COLUMNS)), config)
    summary["drops"] = json.dumps(Counter(dropped["drop_reason"].to_pylist()), sort_keys=True)
    summary["text_bytes"] = int(pc.sum(pc.binary_length(kept["text"])).as_py() or 0) if len(kept) else 0
    return pa.Table.from_pylist([summary])


def _write(path: str, table: pa.Table, config: ShardConfig) -> str:
    """Write ``table`` as Parquet and return the file's sha256."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=config.compression, row_group_size=10_000)
    return write_bytes(path, buffer.getvalue())


def _drop_repeated_ids(group: pa.Table) -> pa.Table:
    """An id that two alive rows carry (an input that repeats its own ids, or two records that hash
    alike) keeps its first row, in (id, source) order, and drops the others as
    ``read:duplicate_id``: counted and audited, never a stopped build. (Every row of an id is in
    the same shard: shards are assigned by id.)"""
    ids, alive = group["id"].to_pylist(), alive_mask(group).to_pylist()
    seen: set[str] = set()
    reasons: list[str | None] = []
    for doc_id, is_alive in zip(ids, alive):
        repeated = is_alive and doc_id in seen
        reasons.append("read:duplicate_id" if repeated else None)
        if is_alive:
            seen.add(doc_id)
    return with_drops(group, reasons, [None] * len(reasons))


def text_bytes(batch: pa.Table) -> pa.Table:
    """``map_batches`` function: the UTF-8 bytes of alive text in this batch, as one row."""
    alive = batch.filter(alive_mask(batch))
    total = pc.sum(pc.binary_length(alive["text"])).as_py() if len(alive) else 0
    return pa.table({"bytes": [int(total or 0)]})
