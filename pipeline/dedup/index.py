"""The incremental dedup index, persisted as Parquet next to a dataset version.

    <version dir>/dedup_index/
        index.json                the settings the keys depend on, and row counts; written last
        buckets/part-NNNNN.parquet  (key_hi, key_lo, band, id): every bucket key of every kept
                                  document, its exact hash included (band -1)

The files are a function of the rows alone: a row goes to file ``key_hi mod files`` (``files``
follows the row count), and each file is sorted. So the same documents give a byte-identical
index whatever the blocks, workers or order they came in, and a rebuild can be diffed.

A later build given this folder as part of ``previous_index`` buckets only its new documents,
together with these rows: a new document sharing a bucket with an indexed one is removed, and
indexed documents are never removed (they rank first, see ``nodes.py``). No old text is read again.

How the index grows: each build writes a part holding the rows of the new documents it kept, and a
version's manifest lists its parent's parts plus its own. So a rebuild writes O(new documents), and
``compact_index`` merges a version's parts into one when there are many.
"""

from __future__ import annotations

import json
import math
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipeline.config import ConfigError, to_dict
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.shuffle import bound_shuffle_input

INDEX_FOLDER = "dedup_index"
INDEX_SCHEMA = pa.schema(
    [("key_hi", pa.int64()), ("key_lo", pa.int64()), ("band", pa.int16()), ("id", pa.string())]
)
_SETTINGS_FILE = "index.json"
_BUCKETS = "buckets"
# About 30 MB per file: an index rewritten by every build stays a few files, not one per block.
ROWS_PER_FILE = 1_000_000
_FILE = "_dedup_index_file"
_ROW_ORDER = [("key_hi", "ascending"), ("key_lo", "ascending"), ("band", "ascending"), ("id", "ascending")]
FORMAT_VERSION = 1


def key_settings(config: DedupConfig) -> dict[str, Any]:
    """Everything the bucket keys depend on: two indexes agree on keys only if these agree."""
    minhash = to_dict(config.minhash)
    minhash.pop("preset")  # a preset only fills in the other fields
    return {"format": FORMAT_VERSION, "exact": to_dict(config.exact), "minhash": minhash, "group_by": config.group_by}


def read_index(path: str, config: DedupConfig) -> ray.data.Dataset:
    """The index rows at ``path``; refuses an index whose keys were made with other settings."""
    path = path.rstrip("/")
    _summary(path, config)
    return ray.data.read_parquet(f"{path}/{_BUCKETS}", schema=INDEX_SCHEMA)


def index_rows(paths: list[str], config: DedupConfig) -> int:
    """How many rows these index parts hold, as their ``index.json`` say (settings checked)."""
    return sum(_summary(path.rstrip("/"), config)["rows"] for path in paths)


def rows_with_keys(paths: list[str], config: DedupConfig, keys: pa.Array) -> pa.Table:
    """The rows of these index parts whose ``key_hi`` is one of ``keys``, read in this process. A
    filtered scan: only the matching rows stay in memory, and no Ray task is started."""
    tables = [INDEX_SCHEMA.empty_table()]
    for path in paths:
        path = path.rstrip("/")
        _summary(path, config)
        fs, folder = fsspec.core.url_to_fs(f"{path}/{_BUCKETS}")
        tables.append(pq.read_table(folder, filesystem=fs, schema=INDEX_SCHEMA, filters=pc.field("key_hi").isin(keys)))
    return pa.concat_tables(tables)


def _summary(path: str, config: DedupConfig) -> dict[str, Any]:
    """The index's ``index.json``, if its keys were made with the settings of ``config``."""
    try:
        with fsspec.open(f"{path}/{_SETTINGS_FILE}", "r") as f:
            written = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"previous_index: no dedup index at {path} ({_SETTINGS_FILE} is missing)") from None
    expected = key_settings(config)
    if written["settings"] != expected:
        differing = sorted(k for k in expected if written["settings"].get(k) != expected[k])
        raise ConfigError(
            f"previous_index: {path} was built with other dedup settings ({', '.join(differing)}); "
            "its keys cannot match this build's"
        )
    return written


def write_index(
    rows: ray.data.Dataset, path: str, config: DedupConfig, rows_per_file: int = ROWS_PER_FILE
) -> dict[str, Any]:
    """Write index rows to ``path`` (a folder, replaced), settings last; returns what ``index.json`` says.

    Not ``Dataset.write_parquet``: its file names and row order follow the blocks. Here the rows
    are hash-partitioned on their file number and every partition writes its files whole.
    """
    path = path.rstrip("/")
    rows = rows.materialize()
    n_rows = rows.count()
    files = max(1, math.ceil(n_rows / rows_per_file))
    fs, folder = fsspec.core.url_to_fs(f"{path}/{_BUCKETS}")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    # ``folder`` is absolute (fsspec resolves local paths): the workers' working directory may differ.
    where = {"fs": fs, "folder": folder}
    if n_rows == 0:  # still a readable folder: one empty file
        _write_files(_with_file_number(INDEX_SCHEMA.empty_table(), files), **where, always=True)
    written = (
        bound_shuffle_input(
            rows.map_batches(_with_file_number, fn_kwargs={"files": files}, batch_format="pyarrow"),
            rows.size_bytes() / files,
        )
        .repartition(files, keys=[_FILE])
        .map_batches(_write_files, fn_kwargs=where, batch_size=None, batch_format="pyarrow")
        .take_all()
    )
    # A file number seen twice would mean a partition reached us in pieces, each overwriting the last.
    if sum(row["rows"] for row in written) != n_rows or len({row["file"] for row in written}) != len(written):
        raise RuntimeError(f"dedup index at {path}: files written {written} do not hold the {n_rows} rows")
    summary = {"settings": key_settings(config), "rows": n_rows, "files": max(len(written), 1)}
    with fsspec.open(f"{path}/{_SETTINGS_FILE}", "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary


def _with_file_number(rows: pa.Table, files: int) -> pa.Table:
    # key_hi is already a well-mixed hash: its residue spreads rows evenly over the files.
    number = rows["key_hi"].to_numpy().view(np.uint64) % np.uint64(files)
    return rows.append_column(_FILE, pa.array(number.astype(np.int32)))


def _write_files(partition: pa.Table, fs: fsspec.AbstractFileSystem, folder: str, always: bool = False) -> pa.Table:
    """Each file number in this partition: its rows, sorted, as ``part-NNNNN.parquet``.
    ``always``: write file 0 even when the partition is empty."""
    numbers = pc.unique(partition[_FILE]).to_pylist() or ([0] if always else [])
    counts = []
    for number in numbers:
        rows = partition.filter(pc.equal(partition[_FILE], number)).select(INDEX_SCHEMA.names)
        with fs.open(f"{folder}/part-{number:05d}.parquet", "wb") as f:
            pq.write_table(rows.sort_by(_ROW_ORDER).cast(INDEX_SCHEMA), f)
        counts.append(rows.num_rows)
    return pa.table({"file": pa.array(numbers, pa.int32()), "rows": pa.array(counts, pa.int64())})


def compact_index(parts: list[str], path: str, config: DedupConfig) -> dict[str, Any]:
    """The rows of several index parts written as one part at ``path``; returns its summary."""
    datasets = [read_index(part, config) for part in parts]
    return write_index(datasets[0].union(*datasets[1:]), path, config)
