"""The two sides of the dedup benchmarks, run on the same documents in one process.

- ``run_datasketch``, the baseline: ``datasketch.MinHash`` signatures (copies of one sketch, as
  its bulk API does, so the permutations are drawn once) over the same shingles as ours, hashed
  with xxh32, the fastest hash it takes, computed in as many processes as ours has Ray CPUs (a
  ``multiprocessing`` pool started before the clock, as ours has warm Ray workers); then, in this
  process, as datasketch's in-memory index must be one, every signature inserted into
  ``datasketch.MinHashLSH`` with the same bands and rows, every document queried, and a
  union-find over the hits keeping the smallest id.
- ``run_ours``: ``pipeline.dedup.deduplicate`` on a local Ray, from the same documents already in
  Ray's object store (as the build hands them over: a materialized dataset, in blocks of 2,000),
  up to the full output materialized (every document, marked and annotated).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from pipeline.dedup import DedupConfig, DedupResult, deduplicate
from pipeline.dedup.config import MinHashConfig
from pipeline.dedup.minhash import signing_normalization
from pipeline.dedup.normalize import normalize
from pipeline.dedup.shingles import shingle_strings, units


@dataclass
class Outcome:
    seconds: float
    # Every removed document's id -> the id of the document kept in its place.
    survivor_of: dict[str, str]


# Ours runs on this many Ray CPUs; datasketch signs in as many processes.
RAY_CPUS = 2


def start_local_ray(object_store_gb: float) -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Shuffle map tasks run in their own worker pool; with Ray's default soft limit of one idle
    # worker per CPU, a 2-CPU node kills and restarts workers between every shuffle (seconds each).
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    ray.init(
        address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
        object_store_memory=int(object_store_gb * 1e9),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False


def datasketch_pool() -> multiprocessing.pool.Pool:
    # Spawned, not forked: the driver holds a running Ray client, which a fork must not copy.
    return multiprocessing.get_context("spawn").Pool(RAY_CPUS)


def run_datasketch(table: pa.Table, config: MinHashConfig, pool: multiprocessing.pool.Pool) -> Outcome:
    started = time.perf_counter()
    ids, texts = table["id"].to_pylist(), table["text"].to_pylist()
    chunk = -(-len(ids) // RAY_CPUS)
    signed: list[tuple[str, LeanMinHash]] = []
    for part in pool.starmap(_sign, [(ids[i : i + chunk], texts[i : i + chunk], config)
                                     for i in range(0, len(ids), chunk)]):
        signed += part
    lsh = MinHashLSH(num_perm=config.num_perm, params=(config.bands, config.rows))
    with lsh.insertion_session() as session:
        for doc_id, sketch in signed:
            session.insert(doc_id, sketch, check_duplication=False)
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


def _sign(ids: list[str], texts: list[str], config: MinHashConfig) -> list[tuple[str, LeanMinHash]]:
    """One process's share of the signatures: (id, signature) of each document with shingles."""
    template = MinHash(num_perm=config.num_perm, seed=config.permutation_seed, hashfunc=xxhash.xxh32_intdigest)
    normalization = signing_normalization(config)  # as ours: no work that cannot change the shingles
    signed = []
    for doc_id, text in zip(ids, texts):
        text_units = units(normalize(text or "", normalization), config)
        shingles = [s.encode() for s in shingle_strings(text_units, config)]
        if not shingles:
            continue  # as ours: a text with no shingle is not bucketed
        # What MinHash.bulk does per document: copy a sketch whose permutations are drawn.
        sketch = template.copy()
        sketch.update_batch(shingles)
        signed.append((doc_id, LeanMinHash(sketch)))  # its hash values and seed, as it is pickled
    return signed


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
