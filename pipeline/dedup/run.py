"""``deduplicate``: exact and MinHash-LSH deduplication of a document dataset, all on Ray Data.

    documents --keys: one pass, exact hash + LSH band keys per alive document--> (materialized)
      --> key rows (+ the indexed rows that share a key with them) --shuffle on bucket key--> candidate edges
      --> connected components: union-find on the driver up to ``union_find_edge_limit`` edges,
          else large-star/small-star rounds of shuffles
      --> decisions (cluster, size, reason) for every clustered new document
      --join on id--> documents marked and annotated; index rows of the kept documents

Every decision is a function of the set of documents (smallest node per component), never of
block layout or worker count, so any partitioning of the same input gives the same output rows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.actor_pool import map_in_shares
from pipeline.config import ConfigError
from pipeline.dedup.components import star_rounds, union_find
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.decisions import DECISION_SCHEMA, apply_decisions, decide, exact_flags, flagged_labels
from pipeline.dedup.index import INDEX_SCHEMA, index_rows, read_index, rows_with_keys
from pipeline.dedup.keys import KEY_COLUMNS, DocumentKeyer, key_rows, new_bucket_rows, to_bucket_rows
from pipeline.dedup.lsh import BUCKET_SCHEMA, EDGE_SCHEMA, bucket_edges, describe_s_curve
from pipeline.dedup.nodes import INDEXED
from pipeline.dedup.shuffle import RayShuffle, broadcast_join, shuffle_join

logger = logging.getLogger(__name__)

REMOVED_SCHEMA = pa.schema([("id", pa.string())])
# Up to this many new bucket rows (8 bytes of key each), the indexed rows are filtered by key before
# the shuffle.
PREFILTER_MAX_KEYS = 5_000_000
# Up to this many bucket rows (new ones and the indexed ones sharing their keys, about 40 MB), the
# driver pairs them itself instead of shuffling them.
ONE_PROCESS_BUCKET_ROWS = 1_000_000
# Up to this many indexed rows (about 33 bytes each in Parquet, so some 660 MB), the driver reads the
# ones sharing a key with the new documents itself: a filtered scan costs less than starting read
# tasks, and only the matching rows stay in its memory.
ONE_PROCESS_INDEX_ROWS = 20_000_000


@dataclass
class DedupResult:
    """``documents``: every input row, removals marked, ``dup_cluster_id``/``dup_cluster_size``
    added. ``index``: the index rows of the kept documents, the part of the index this build adds
    (``write_index``). Both are lazy; ``stats`` describes what was computed to get here."""

    documents: ray.data.Dataset
    index: ray.data.Dataset
    stats: dict[str, Any] = field(default_factory=dict)


def deduplicate(ds: ray.data.Dataset, config: DedupConfig, previous_index: list[str] | None = None) -> DedupResult:
    """``previous_index``: the index parts (folders) of what earlier versions kept."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    columns = ds.schema().names
    if config.group_by is not None and config.group_by not in columns:
        raise ConfigError(f"dedup.group_by: the documents have no column {config.group_by!r}")
    if config.minhash.enabled:
        logger.debug("dedup MinHash-LSH %s", describe_s_curve(config.minhash.bands, config.minhash.rows))

    # Materialized first: the key step cuts its shares by row count. (A no-op for the build's
    # dataset, which is materialized already.)
    ds = ds.materialize()
    keyed = map_in_shares(
        ds, DocumentKeyer, workers=config.key_workers, rows_per_call=config.batch_documents,
        constructor_kwargs={"config": config}, batch_format="pyarrow",
    ).materialize()
    documents = keyed.drop_columns(list(KEY_COLUMNS))
    document_schema = pa.schema([f for f in keyed.schema().base_schema if f.name not in KEY_COLUMNS])
    # The index rows of these documents, computed only where they are used: writing the index.
    new_rows = keyed.map_batches(key_rows, batch_format="pyarrow")
    seconds["keys"] = time.perf_counter() - started

    # Partitions are sized on the keyed documents, text included: more (smaller) than the bucket
    # rows need, but known without another pass over the data.
    shuffle = RayShuffle(config.partition_mb)
    if not previous_index:  # the bucket rows are made inside the shuffle's map tasks: no pass of their own
        edges = shuffle.by_key(keyed, "key_hi", bucket_edges, prepare=new_bucket_rows)
    else:
        new_buckets = keyed.map_batches(new_bucket_rows, batch_format="pyarrow").materialize()
        # Only indexed rows that share a bucket with a new document can make an edge: those alone
        # go into the shuffle, so a small increment costs a read of the index, not a shuffle of it.
        keys = _bucket_keys(new_buckets)
        if keys is not None and index_rows(previous_index, config) <= ONE_PROCESS_INDEX_ROWS:
            old_buckets = ray.data.from_arrow(to_bucket_rows(rows_with_keys(previous_index, config, keys), INDEXED))
        else:
            old_buckets = _union([read_index(part, config) for part in previous_index]).map_batches(
                _indexed_bucket_rows, fn_kwargs={"keys": keys}, batch_format="pyarrow"
            )
        bucket_rows = new_buckets.union(old_buckets).materialize()
        if keys is not None and bucket_rows.count() <= ONE_PROCESS_BUCKET_ROWS:
            # A small increment: its buckets are paired in this process, sparing a shuffle's fixed cost.
            edges = ray.data.from_arrow(bucket_edges(_gather(bucket_rows, BUCKET_SCHEMA)))
        else:
            edges = shuffle.by_key(bucket_rows, "key_hi", bucket_edges)
    n_edges = edges.count()
    seconds["buckets"] = time.perf_counter() - started - sum(seconds.values())

    if n_edges <= config.union_find_edge_limit:
        # Small enough for one process: gather the edges, and broadcast the decisions back.
        edge_table = _gather(edges, EDGE_SCHEMA)
        labels = union_find(edge_table.select(["lo", "hi"]))
        decisions = decide(pa.concat_tables([flagged_labels(labels), exact_flags(edge_table)]))
        removed = decisions.filter(pc.is_valid(decisions["dup_reason"])).select(["id"])
        documents = broadcast_join(documents, decisions, apply_decisions)
        kept_rows = broadcast_join(new_rows, removed, _drop_removed)
        components = {"method": "union_find", "rounds": 0, "clustered": decisions.num_rows}
        removals = Counter(pc.drop_null(decisions["dup_reason"]).to_pylist())
    else:
        labels, rounds = star_rounds(edges.select_columns(["lo", "hi"]), shuffle, config.max_rounds)
        flagged = labels.map_batches(flagged_labels, batch_format="pyarrow").union(
            edges.map_batches(exact_flags, batch_format="pyarrow")
        )
        decisions = shuffle.by_key(flagged, "node", decide)
        removed = decisions.map_batches(_removed_ids, batch_format="pyarrow")
        documents = shuffle_join(
            documents, document_schema, decisions, DECISION_SCHEMA, "id", apply_decisions,
            shuffle.partitions(keyed.size_bytes()), shuffle.partition_bytes,
        )
        kept_rows = shuffle_join(
            new_rows, INDEX_SCHEMA, removed, REMOVED_SCHEMA, "id", _drop_removed,
            shuffle.partitions(keyed.size_bytes()), shuffle.partition_bytes,
        )
        components = {"method": "star_rounds", "rounds": rounds, "clustered": decisions.count()}
        removals = _reason_counts(decisions)
    seconds["components"] = time.perf_counter() - started - sum(seconds.values())

    stats = {
        # Only these documents were read, normalized and signed; the previous index's are not.
        "keyed_documents": keyed.count(),
        "candidate_edges": n_edges,
        "components": components,
        "removed": {reason.split(":", 1)[1]: n for reason, n in sorted(removals.items())},
        "s_curve": describe_s_curve(config.minhash.bands, config.minhash.rows) if config.minhash.enabled else None,
        "seconds": seconds,
    }
    logger.debug("dedup: %s", stats)  # the manifest keeps them too
    return DedupResult(documents=documents, index=kept_rows, stats=stats)


def _union(datasets: list[ray.data.Dataset]) -> ray.data.Dataset:
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def _bucket_keys(buckets: ray.data.Dataset) -> pa.Array | None:
    """The distinct ``key_hi`` of these bucket rows, or None when there are too many to hand to
    every task (then every indexed row is shuffled, which is still correct)."""
    if buckets.count() > PREFILTER_MAX_KEYS:
        return None
    return pc.unique(pa.chunked_array([block["key_hi"] for block in ray.get(buckets.to_arrow_refs())], pa.int64()))


def _indexed_bucket_rows(rows: pa.Table, keys: pa.Array | None) -> pa.Table:
    if keys is not None:
        rows = rows.filter(pc.is_in(rows["key_hi"], value_set=keys))
    return to_bucket_rows(rows, INDEXED)


def _gather(ds: ray.data.Dataset, schema: pa.Schema) -> pa.Table:
    # An empty block may carry no columns at all (``from_arrow`` of an empty table does): skipped.
    blocks = [block for block in ray.get(ds.to_arrow_refs()) if block.num_rows]
    return pa.concat_tables([schema.empty_table(), *blocks]).cast(schema)


def _drop_removed(rows: pa.Table, removed: pa.Table) -> pa.Table:
    # As in apply_decisions: narrow the (possibly broadcast, large) removed ids to this batch's first.
    here = pc.filter(removed["id"], pc.is_in(removed["id"], value_set=pc.unique(rows["id"])))
    return rows.filter(pc.invert(pc.is_in(rows["id"], value_set=here)))


def _removed_ids(decisions: pa.Table) -> pa.Table:
    return decisions.filter(pc.is_valid(decisions["dup_reason"])).select(["id"])


def _reason_counts(decisions: ray.data.Dataset) -> Counter[str]:
    """Removals per reason, counted per block on the workers; only the counts reach the driver."""

    def count(batch: pa.Table) -> pa.Table:
        counts = pc.value_counts(pc.drop_null(batch["dup_reason"]))
        return pa.table({"reason": counts.field("values"), "n": counts.field("counts")})

    totals: Counter[str] = Counter()
    for row in decisions.map_batches(count, batch_format="pyarrow").take_all():
        totals[row["reason"]] += int(row["n"])
    return totals
