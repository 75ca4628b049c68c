"""Connected components of the candidate-duplicate graph, each labelled by its smallest node.

Edges are tables of ``(lo, hi)`` string nodes with ``lo < hi``. Two ways to the same labels:

- ``union_find``: one process, near-linear. Fine while the edges fit on one machine.
- ``star_rounds``: the large-star / small-star algorithm of Kiveris et al., "Connected Components
  in MapReduce and Beyond" (SoCC 2014). Every step groups the edges by one endpoint, so it runs as
  shuffles, and no step holds more than one node's neighbourhood. It converges in O(log^2 n)
  rounds; in practice a handful.

  - large-star, at node u: connect every neighbour *larger* than u to m = min(u, neighbours).
  - small-star, at node u: connect u and every neighbour *smaller* than u to m, the smallest of
    those neighbours.

  The graph keeps its components throughout, and stops changing exactly when every component is a
  star around its smallest node. A step marks each edge it emits from a node whose neighbourhood
  was not yet such a star; a round (large then small) that marks nothing has converged, and
  ``star_labels`` reads each star's centre and size.

The partition functions take and return ``pa.Table``; ``star_rounds`` leaves the shuffling to a
``Shuffle``: Ray Data in production (``run.py``), a plain in-process one in the unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LABEL_SCHEMA = pa.schema([("node", pa.string()), ("label", pa.string()), ("size", pa.int64())])
ROUND_EDGE_SCHEMA = pa.schema([("lo", pa.string()), ("hi", pa.string()), ("changed", pa.bool_())])
NEIGHBOUR_SCHEMA = pa.schema([("node", pa.string()), ("nbr", pa.string())])

PartitionFn = Callable[[pa.Table], pa.Table]


class Shuffle(Protocol):
    """Where the edge tables live between steps, and how they are regrouped."""

    def by_key(self, data: Any, key: str, fn: PartitionFn, prepare: PartitionFn | None = None) -> Any:
        """Apply ``prepare`` row-wise to ``data`` (any slices), then ``fn`` to hash partitions of the
        result on ``key``: all rows with one key value meet in one call."""

    def total(self, data: Any, column: str) -> int:
        """Sum of a numeric or boolean column."""


# ---------------------------------------------------------------------------------------------
# One process


def union_find(edges: pa.Table) -> pa.Table:
    """Labels (node, label, size) of every node that has an edge."""
    nodes = _sorted_nodes(edges["lo"], edges["hi"])
    parent = list(range(len(nodes)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    lo = pc.index_in(edges["lo"], value_set=nodes).to_numpy(zero_copy_only=False).tolist()
    hi = pc.index_in(edges["hi"], value_set=nodes).to_numpy(zero_copy_only=False).tolist()
    for a, b in zip(lo, hi):
        ra, rb = root(a), root(b)
        # Nodes are numbered in sorted order: the smaller root wins, so each root is its
        # component's smallest node.
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    roots = np.array([root(x) for x in range(len(nodes))], dtype=np.int64)
    sizes = np.bincount(roots, minlength=len(nodes))
    return pa.table({"node": nodes, "label": nodes.take(roots), "size": sizes[roots]}, schema=LABEL_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Rounds over a Shuffle


def star_rounds(edges: Any, shuffle: Shuffle, max_rounds: int) -> tuple[Any, int]:
    """Labels of every node that has an edge, and the number of rounds it took."""
    for round_number in range(1, max_rounds + 1):
        edges = shuffle.by_key(edges, "node", large_star, prepare=both_directions)
        changed = shuffle.total(edges, "changed")
        edges = shuffle.by_key(edges, "node", small_star, prepare=toward_smaller)
        changed += shuffle.total(edges, "changed")
        if changed == 0:
            return shuffle.by_key(edges, "lo", star_labels), round_number
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def both_directions(edges: pa.Table) -> pa.Table:
    return pa.table(
        {"node": pa.chunked_array([*edges["lo"].chunks, *edges["hi"].chunks], pa.string()),
         "nbr": pa.chunked_array([*edges["hi"].chunks, *edges["lo"].chunks], pa.string())},
        schema=NEIGHBOUR_SCHEMA,
    )


def toward_smaller(edges: pa.Table) -> pa.Table:
    return pa.table({"node": edges["hi"], "nbr": edges["lo"]}, schema=NEIGHBOUR_SCHEMA)


def large_star(neighbours: pa.Table) -> pa.Table:
    """At each node u: every neighbour v > u gets the edge (m, v), m = min(u, neighbours of u)."""
    hood = _Neighbourhoods(neighbours)
    if hood.empty:
        return ROUND_EDGE_SCHEMA.empty_table()
    owner = hood.u[hood.starts]
    smallest = np.minimum(hood.v[hood.starts], owner)
    largest = hood.v[hood.ends - 1]
    changed = (smallest < owner) & (largest > owner)  # neighbours on both sides: not a star yet
    emit = hood.v > hood.u
    return hood.edges(smallest[hood.group][emit], hood.v[emit], changed[hood.group][emit])


def small_star(neighbours: pa.Table) -> pa.Table:
    """At each node u with smaller neighbours N: u and every v in N get the edge (min N, .)."""
    hood = _Neighbourhoods(neighbours)
    if hood.empty:
        return ROUND_EDGE_SCHEMA.empty_table()
    smallest = hood.v[hood.starts]
    changed = (hood.ends - hood.starts) > 1  # two smaller neighbours: not a star yet
    others = hood.v != smallest[hood.group]
    lo = np.concatenate([smallest[hood.group][others], smallest])
    hi = np.concatenate([hood.v[others], hood.u[hood.starts]])
    flags = np.concatenate([changed[hood.group][others], changed])
    return hood.edges(lo, hi, flags)


def star_labels(stars: pa.Table) -> pa.Table:
    """Labels from converged stars, partitioned by centre (``lo``): leaves and centre get its id."""
    if stars.num_rows == 0:
        return LABEL_SCHEMA.empty_table()
    hood = _Neighbourhoods(pa.table({"node": stars["lo"], "nbr": stars["hi"]}))
    sizes = (hood.ends - hood.starts + 1).astype(np.int64)
    centres = hood.u[hood.starts]
    node = np.concatenate([hood.v, centres])
    label = np.concatenate([centres[hood.group], centres])
    size = np.concatenate([sizes[hood.group], sizes])
    return pa.table(
        {"node": hood.names.take(node), "label": hood.names.take(label), "size": size}, schema=LABEL_SCHEMA
    )


class _Neighbourhoods:
    """Distinct (node, nbr) pairs as integer codes in string order, grouped by node.

    ``u``/``v``: the pairs sorted by (u, v); group ``g`` spans ``starts[g]:ends[g]``; ``group[i]``
    is the group of pair ``i``; ``names`` turns codes back into nodes.
    """

    def __init__(self, neighbours: pa.Table):
        self.names = _sorted_nodes(neighbours["node"], neighbours["nbr"])
        self.empty = len(self.names) == 0
        u = pc.index_in(neighbours["node"], value_set=self.names).to_numpy(zero_copy_only=False).astype(np.int64)
        v = pc.index_in(neighbours["nbr"], value_set=self.names).to_numpy(zero_copy_only=False).astype(np.int64)
        pairs = np.unique(u * len(self.names) + v)
        self.u, self.v = np.divmod(pairs, len(self.names)) if len(self.names) else (pairs, pairs)
        new_group = np.ones(len(self.u), dtype=bool)
        new_group[1:] = self.u[1:] != self.u[:-1]
        self.starts = np.flatnonzero(new_group)
        self.ends = np.append(self.starts[1:], len(self.u))
        self.group = np.cumsum(new_group) - 1

    def edges(self, lo: np.ndarray, hi: np.ndarray, changed: np.ndarray) -> pa.Table:
        return pa.table(
            {"lo": self.names.take(lo), "hi": self.names.take(hi), "changed": changed}, schema=ROUND_EDGE_SCHEMA
        )


def _sorted_nodes(*columns: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The distinct nodes of the columns, sorted: their positions order them like the strings."""
    chunks = [chunk for column in columns for chunk in getattr(column, "chunks", [column])]
    distinct = pc.unique(pa.chunked_array(chunks, pa.string()))
    return distinct.take(pc.sort_indices(distinct))
