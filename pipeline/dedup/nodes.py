"""Graph nodes: document ids prefixed with a rank, so that the smallest node of a component is the
document to keep.

Documents already in the dataset (they come from the previous build's index) rank before new ones,
so an incremental build never removes them; within a rank the smallest id wins.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

INDEXED = "0"
NEW = "1"


def to_nodes(ids: pa.Array | pa.ChunkedArray, rank: str) -> pa.Array | pa.ChunkedArray:
    return pc.binary_join_element_wise(rank, pc.cast(ids, pa.string()), "")


def to_ids(nodes: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.utf8_slice_codeunits(nodes, 1)


def is_new(nodes: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.starts_with(nodes, NEW)
