"""The two sides of the dedup benchmarks, run on the same documents in one process.

- ``run_datasketch``, the baseline: one process, ``datasketch.MinHash`` signatures (copies of one
  sketch, as its bulk API does, so the permutations are drawn once) over the same shingles as
  ours, hashed with xxh32, the fastest hash it takes; every signature inserted into ``datasketch.MinHashLSH`` with the same
  bands and rows; every document queried; a union-find over the hits keeping the smallest id.
- ``run_ours``: ``pipeline.dedup.deduplicate`` on a local Ray, from the same documents already in
  Ray's object store (as the build hands them over: a materialized dataset, in blocks of 2,000),
  up to the full output materialized (every document, marked and annotated).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray
import xxhash
from datasketch import MinHash, MinHashLSH

from pipeline.dedup import DedupConfig, DedupResult, deduplicate
from pipeline.dedup.config import MinHashConfig
from pipeline.dedup.normalize import normalize
from pipeline.dedup.shingles import shingle_strings, units


@dataclass
class Outcome:
    seconds: float
    # Every removed document's id -> the id of the document kept in its place.
    survivor_of: dict[str, str]


def start_local_ray(object_store_gb: float) -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Shuffle map tasks run in their own worker pool; with Ray's default soft limit of one idle
    # worker per CPU, a 2-CPU node kills and restarts workers between every shuffle (seconds each).
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
        object_store_memory=int(object_store_gb * 1e9),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False


def run_datasketch(table: pa.Table, config: MinHashConfig) -> Outcome:
    started = time.perf_counter()
    template = MinHash(num_perm=config.num_perm, seed=config.permutation_seed, hashfunc=xxhash.xxh32_intdigest)
    lsh = MinHashLSH(num_perm=config.num_perm, params=(config.bands, config.rows))
    signed = []
    with lsh.insertion_session() as session:
        for doc_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist()):
            text_units = units(normalize(text or "", config.normalize), config)
            shingles = [s.encode() for s in shingle_strings(text_units, config)]
            if not shingles:
                continue  # as ours: a text with no shingle is not bucketed
            # What MinHash.bulk does per document: copy a sketch whose permutations are drawn.
            sketch = template.copy()
            sketch.update_batch(shingles)
            session.insert(doc_id, sketch, check_duplication=False)
            signed.append((doc_id, sketch))
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for doc_id, sketch in signed:
        for other in lsh.query(sketch):
            a, b = root(doc_id), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    survivor_of = {doc_id: root(doc_id) for doc_id in parent if root(doc_id) != doc_id}
    return Outcome(time.perf_counter() - started, survivor_of)


def as_dataset(table: pa.Table, rows_per_block: int = 2000) -> ray.data.MaterializedDataset:
    blocks = [table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)]
    return ray.data.from_arrow(blocks).materialize()


def run_ours(documents: ray.data.Dataset, config: DedupConfig) -> tuple[Outcome, DedupResult]:
    started = time.perf_counter()
    result = deduplicate(documents, config)
    output = result.documents.select_columns(["id", "drop_reason", "dup_cluster_id"]).materialize()
    seconds = time.perf_counter() - started
    table = pa.concat_tables(ray.get(output.to_arrow_refs()))
    removed = table.filter(pc.starts_with(pc.fill_null(table["drop_reason"], ""), "dedup:"))
    return Outcome(seconds, dict(zip(removed["id"].to_pylist(), removed["dup_cluster_id"].to_pylist()))), result
