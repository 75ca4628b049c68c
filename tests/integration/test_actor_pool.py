"""Stages with a callable class on Ray Data: tasks on warm workers, in shares cut into slices."""

from __future__ import annotations

import pyarrow as pa

from pipeline.actor_pool import map_in_shares


def test_map_in_shares_calls_every_row_once_in_bounded_slices(ray_local):
    import os

    class Tagger:
        """Adds ``x + offset``, the slice's row count, and which instance in which process saw it."""

        def __init__(self, offset: int):
            self.offset = offset

        def __call__(self, batch: pa.Table) -> pa.Table:
            n = batch.num_rows
            return (
                batch.append_column("y", pa.array([x + self.offset for x in batch["x"].to_pylist()]))
                .append_column("slice_rows", pa.array([n] * n))
                .append_column("instance", pa.array([f"{os.getpid()}:{id(self)}"] * n))
            )

    ds = ray_local.data.from_arrow([pa.table({"x": list(range(i, i + 100))}) for i in range(0, 1000, 100)]).materialize()
    out = map_in_shares(
        ds, Tagger, workers=2, rows_per_call=30, constructor_kwargs={"offset": 5}, batch_format="pyarrow"
    ).materialize()
    rows = sorted(out.take_all(), key=lambda row: row["x"])
    assert [row["x"] for row in rows] == list(range(1000))
    assert all(row["y"] == row["x"] + 5 for row in rows)
    assert max(row["slice_rows"] for row in rows) <= 30
    # Each worker process builds the class once for every share it takes.
    instances = {row["instance"] for row in rows}
    assert len({instance.split(":")[0] for instance in instances}) == len(instances)
