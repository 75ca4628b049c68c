"""From component labels to what happens to each document, and applying that to document batches.

A *decision* exists for every new document that has at least one candidate edge: its cluster (the
id of the component's smallest node, the survivor), the cluster's size, and why it is removed
(null for the survivor). Documents without a decision are singletons: their own cluster, size 1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.components import LABEL_SCHEMA
from pipeline.dedup.nodes import is_new, to_ids
from pipeline.documents import alive_mask, with_drops

STAGE = "dedup"
EXACT_DUP = f"{STAGE}:exact_dup"
NEAR_DUP = f"{STAGE}:near_dup"
CLUSTER_ID, CLUSTER_SIZE = "dup_cluster_id", "dup_cluster_size"

DECISION_SCHEMA = pa.schema(
    [("id", pa.string()), (CLUSTER_ID, pa.string()), (CLUSTER_SIZE, pa.int64()), ("dup_reason", pa.string())]
)
# Labels and exact-duplicate flags in one table, so one shuffle on ``node`` brings them together:
# a label row has ``exact`` false; a flag row has only ``node`` and ``exact`` true.
FLAGGED_LABEL_SCHEMA = pa.schema([*LABEL_SCHEMA, pa.field("exact", pa.bool_())])


def flagged_labels(labels: pa.Table) -> pa.Table:
    return labels.append_column("exact", pa.array(np.zeros(labels.num_rows, dtype=bool)))


def exact_flags(edges: pa.Table) -> pa.Table:
    """Flag rows for the ``hi`` end of every exact edge: it has an exact twin that ranks first."""
    hi = pc.filter(edges["hi"], edges["exact"])
    return pa.table(
        {"node": hi, "label": pa.nulls(len(hi), pa.string()), "size": pa.nulls(len(hi), pa.int64()),
         "exact": pa.array(np.ones(len(hi), dtype=bool))},
        schema=FLAGGED_LABEL_SCHEMA,
    )


def decide(rows: pa.Table) -> pa.Table:
    """Decisions for the new documents among ``rows`` (all label and flag rows of their nodes)."""
    flagged = pc.unique(pc.filter(rows["node"], rows["exact"]))
    labelled = rows.filter(pc.and_(pc.is_valid(rows["label"]), is_new(rows["node"])))
    removed = pc.not_equal(labelled["node"], labelled["label"])
    exact = pc.is_in(labelled["node"], value_set=flagged)
    reason = pc.if_else(removed, pc.if_else(exact, EXACT_DUP, NEAR_DUP), pa.scalar(None, pa.string()))
    return pa.table(
        {"id": to_ids(labelled["node"]), CLUSTER_ID: to_ids(labelled["label"]), CLUSTER_SIZE: labelled["size"],
         "dup_reason": reason},
        schema=DECISION_SCHEMA,
    )


def apply_decisions(docs: pa.Table, decisions: pa.Table) -> pa.Table:
    """Mark removed documents (clearing their payload) and add the cluster columns to every row.

    ``decisions`` must hold the decision of every clustered document in ``docs``; it may hold
    many others (all of them, when broadcast). Rows dropped by an earlier stage pass through with
    null cluster columns.
    """
    # Probing the big table with the batch's ids first is much cheaper than hashing all of it.
    decisions = decisions.filter(pc.is_in(decisions["id"], value_set=docs["id"]))
    alive = alive_mask(docs)
    at = pc.index_in(docs["id"], value_set=decisions["id"])
    clustered = pc.and_(alive, pc.is_valid(at))
    no_string, no_int = pa.scalar(None, pa.string()), pa.scalar(None, pa.int64())
    cluster_id = pc.if_else(clustered, decisions[CLUSTER_ID].take(at), pc.if_else(alive, docs["id"], no_string))
    size = pc.if_else(clustered, decisions[CLUSTER_SIZE].take(at), pc.if_else(alive, 1, no_int))
    reason = pc.if_else(clustered, decisions["dup_reason"].take(at), no_string)
    # The value a removal is measured by: the size of the cluster it collapsed into.
    value = pc.if_else(pc.is_valid(reason), pc.cast(size, pa.float64()), pa.scalar(None, pa.float64()))
    docs = with_drops(docs, reason.to_pylist(), value.to_pylist())
    return docs.append_column(CLUSTER_ID, pc.cast(cluster_id, pa.string())).append_column(
        CLUSTER_SIZE, pc.cast(size, pa.int64())
    )
