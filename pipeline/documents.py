"""The one document schema every reader produces and every stage passes along.

A row is either *alive* (``drop_reason`` is null) or *dropped*: the stage that removed it wrote
``drop_reason`` as ``"<stage>:<reason>"`` and the value it measured in ``drop_value``, and cleared the
payload columns. Dropped rows travel on to the end of the build so that every input record is
accounted for: the final step counts them by reason and, if asked, writes them to the audit output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("source", pa.string()),
        # The crawl (dump) the document comes from, e.g. ``CC-MAIN-2024-10``: FineWeb deduplicates
        # within each dump (``dedup.group_by: dump``).
        pa.field("dump", pa.string()),
        pa.field("fetch_time", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("html", pa.large_string()),
        pa.field("text", pa.large_string()),
        pa.field("drop_reason", pa.string()),
        pa.field("drop_value", pa.float64()),
    ]
)

PAYLOAD_COLUMNS = ("html", "text")


def stable_id(source: str, record_key: str) -> str:
    """A document id that depends only on where the record came from, never on run order."""
    return hashlib.sha1(f"{source}\x00{record_key}".encode()).hexdigest()[:20]


def empty_table(schema: pa.Schema = DOC_SCHEMA) -> pa.Table:
    return schema.empty_table()


def table_from_rows(rows: list[dict], schema: pa.Schema = DOC_SCHEMA) -> pa.Table:
    """Build a batch from dicts; keys missing from a row are null."""
    return pa.Table.from_pylist(rows, schema=schema)


def alive_mask(batch: pa.Table) -> pa.ChunkedArray:
    return pc.is_null(batch["drop_reason"])


def alive_rows(batch: pa.Table, column: str = "text") -> Iterator[tuple[int, Any]]:
    """(row number, value of ``column``) for each alive row: what every per-document stage loops over."""
    for i, (is_alive, value) in enumerate(zip(alive_mask(batch).to_pylist(), batch[column].to_pylist())):
        if is_alive:
            yield i, value


def with_drops(batch: pa.Table, reasons: list[str | None], values: list[float | None]) -> pa.Table:
    """Mark rows dropped where ``reasons`` is set, keeping earlier drops, and clear their payload.

    ``reasons``/``values`` are full-length (one entry per row). Rows that were already dropped must be
    passed as None so their original reason stands.
    """
    new_reason = pa.array(reasons, pa.string())
    dropped = pc.is_valid(new_reason)
    if not pc.any(dropped).as_py():
        return batch
    batch = replace_column(batch, "drop_reason", pc.coalesce(batch["drop_reason"], new_reason))
    batch = replace_column(batch, "drop_value", pc.if_else(dropped, pa.array(values, pa.float64()), batch["drop_value"]))
    for column in PAYLOAD_COLUMNS:
        if column in batch.column_names:
            null = pa.nulls(len(batch), batch.schema.field(column).type)
            batch = replace_column(batch, column, pc.if_else(dropped, null, batch[column]))
    return batch


def put_column(batch: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``batch`` with column ``name`` set to ``values``: replaced if it exists (its type taken from
    ``values``), appended otherwise."""
    if name in batch.column_names:
        batch = batch.drop_columns([name])
    return batch.append_column(name, values)


def replace_column(batch: pa.Table, name: str, values) -> pa.Table:
    """``batch`` with column ``name``'s values replaced, keeping its place and its field (type,
    nullability, metadata): ``values`` are cast to it."""
    index = batch.schema.get_field_index(name)
    field = batch.schema.field(index)
    return batch.set_column(index, field, pc.cast(values, field.type))
