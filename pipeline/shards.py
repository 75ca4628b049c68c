"""Clean-text Parquet shards, the audit of removed documents, the manifest, and the atomic commit.

A dataset version is a folder ``<root>/<version>/`` holding ``shards/``, optionally ``audit/``, and
``manifest.json``. It is built in ``<root>/.<version>.inprogress/`` and renamed into place only after
the manifest, written last, is there: a folder without a manifest is never taken for complete.

Determinism: every row goes to shard ``hash(id) % n_shards`` and each shard is sorted by id, so the
same rows give byte-identical files whatever the block layout or number of workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipeline.config import config_dataclass
from pipeline.documents import alive_mask, with_drops

MANIFEST = "manifest.json"

# Columns that only make sense while building: the raw HTML and the drop bookkeeping.
BUILD_ONLY_COLUMNS = ("html", "drop_reason", "drop_value")
AUDIT_COLUMNS = ("id", "url", "source", "drop_reason", "drop_value")


@config_dataclass
class ShardConfig:
    target_mb: float = 256.0
    compression: str = "zstd"
    # Keep every removed document's id, url, reason and measured value in ``audit/``.
    write_audit: bool = True


# ---------------------------------------------------------------------------------------------
# Where a version lives


@dataclass(frozen=True)
class VersionPaths:
    root: str
    version: str

    @property
    def final(self) -> str:
        return f"{self.root.rstrip('/')}/{self.version}"

    @property
    def staging(self) -> str:
        return f"{self.root.rstrip('/')}/.{self.version}.inprogress"

    @property
    def manifest(self) -> str:
        return f"{self.final}/{MANIFEST}"


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://..., file:///..., models:/name/1, runs:/id/...


def absolute(path: str) -> str:
    """A local path made absolute (Ray workers do not share the driver's working directory); a URI
    (``s3://``, ``gs://``, an MLflow ``models:/`` or ``runs:/``) as given."""
    return path if _URI.match(path) else os.path.abspath(path)


def filesystem(path: str) -> fsspec.AbstractFileSystem:
    return fsspec.core.url_to_fs(path)[0]


def is_complete(paths: VersionPaths) -> bool:
    return filesystem(paths.final).exists(paths.manifest)


def read_manifest(version_dir: str) -> dict[str, Any]:
    with fsspec.open(f"{version_dir.rstrip('/')}/{MANIFEST}", "r") as f:
        return json.load(f)


def prepare_staging(paths: VersionPaths) -> None:
    """Start from an empty staging folder: whatever an interrupted build left there is discarded."""
    fs = filesystem(paths.staging)
    if fs.exists(paths.staging):
        fs.rm(paths.staging, recursive=True)
    fs.makedirs(paths.staging, exist_ok=True)


def commit(paths: VersionPaths, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then move the staged version into place."""
    fs = filesystem(paths.final)
    with fsspec.open(f"{paths.staging}/{MANIFEST}", "w") as f:
        f.write(manifest_json(manifest))
    if fs.exists(paths.final):
        fs.rm(paths.final, recursive=True)
    fs.mv(paths.staging, paths.final, recursive=True)


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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


def write_shard(group: pa.Table, staging_dir: str, n_shards: int, config: ShardConfig) -> pa.Table:
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
    summary["sha256"] = _write(f"{staging_dir}/shards/{name}", kept, config) if len(kept) else None
    summary["audit_rows"] = len(dropped) if config.write_audit else 0
    if config.write_audit and len(dropped):
        _write(f"{staging_dir}/audit/{name}", dropped.select(list(AUDIT_COLUMNS)), config)
    summary["drops"] = json.dumps(Counter(dropped["drop_reason"].to_pylist()), sort_keys=True)
    summary["text_bytes"] = int(pc.sum(pc.binary_length(kept["text"])).as_py() or 0) if len(kept) else 0
    return pa.Table.from_pylist([summary])


def _write(path: str, table: pa.Table, config: ShardConfig) -> str:
    """Write ``table`` as Parquet and return the file's sha256."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=config.compression, row_group_size=10_000)
    return write_bytes(path, buffer.getvalue())


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` on any filesystem, creating its folder; return its sha256."""
    fs = filesystem(path)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


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
