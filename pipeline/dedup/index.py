"""The incremental dedup index, persisted as Parquet next to a dataset version.

    <version dir>/dedup_index/
        index.json          the settings the keys depend on, and row counts; written last
        buckets/*.parquet   (key_hi, key_lo, band, id): every bucket key of every kept document,
                            its exact hash included (band -1)

A later build given this folder as ``previous_index`` buckets only its new documents, together
with these rows: a new document sharing a bucket with an indexed one is removed, and indexed
documents are never removed (they rank first, see ``nodes.py``). No old text is read again.

How the index chains: the index a build writes is the previous index's rows plus the rows of the
new documents it kept. So version N's index covers everything kept in versions 1..N, each rebuild
needs only the latest index, and an old version's folder can be deleted without breaking the chain.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa
import ray

from pipeline.config import ConfigError, to_dict
from pipeline.dedup.config import DedupConfig

INDEX_FOLDER = "dedup_index"
INDEX_SCHEMA = pa.schema(
    [("key_hi", pa.int64()), ("key_lo", pa.int64()), ("band", pa.int16()), ("id", pa.string())]
)
_SETTINGS_FILE = "index.json"
_BUCKETS = "buckets"
# About 30 MB per file: an index rewritten by every build stays a few files, not one per block.
_ROWS_PER_FILE = 1_000_000
FORMAT_VERSION = 1


def key_settings(config: DedupConfig) -> dict[str, Any]:
    """Everything the bucket keys depend on: two indexes agree on keys only if these agree."""
    minhash = to_dict(config.minhash)
    minhash.pop("preset")  # a preset only fills in the other fields
    return {"format": FORMAT_VERSION, "exact": to_dict(config.exact), "minhash": minhash, "group_by": config.group_by}


def read_index(path: str, config: DedupConfig) -> ray.data.Dataset:
    """The index rows at ``path``; refuses an index whose keys were made with other settings."""
    path = path.rstrip("/")
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
    return ray.data.read_parquet(f"{path}/{_BUCKETS}", schema=INDEX_SCHEMA)


def write_index(rows: ray.data.Dataset, path: str, config: DedupConfig) -> dict[str, Any]:
    """Write index rows to ``path`` (a folder), settings last; returns what ``index.json`` says."""
    path = path.rstrip("/")
    rows.write_parquet(f"{path}/{_BUCKETS}", mode=ray.data.SaveMode.OVERWRITE, min_rows_per_file=_ROWS_PER_FILE)
    written = ray.data.read_parquet(f"{path}/{_BUCKETS}", schema=INDEX_SCHEMA)
    summary = {"settings": key_settings(config), "rows": written.count()}
    with fsspec.open(f"{path}/{_SETTINGS_FILE}", "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
