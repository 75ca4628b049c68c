"""The Ray Data plumbing dedup needs: per-key partition functions, and two ways to join.

- ``RayShuffle.by_key`` hash-partitions a dataset on a key (``repartition(keys=...)``, Ray's
  hash shuffle) and runs a function once per whole partition. That is how ``map_groups`` works
  inside; we call the function on the partition rather than once per group because there are
  millions of groups (bucket keys, graph nodes) and a Python call each would dominate.
  The number of partitions follows the data: about ``partition_mb`` each, so a reduce task's
  memory stays bounded as the corpus grows, and at least one per CPU of the cluster.
- ``shuffle_join`` joins two datasets on a key with one shuffle of both (a reduce-side join;
  ``Dataset.join`` would need polars, which this project does not install).
- ``broadcast_join`` hands a small driver-side table to every map task instead.

Every shuffle here first caps Ray Data's ``shuffle_input_batch_bytes`` (1 GiB by default) at the
partition size: a shuffle map task merges that much of its node's input blocks, so with the
default one worker's memory grows with the corpus up to a gigabyte.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.dedup.components import PartitionFn

JoinFn = Callable[[pa.Table, pa.Table], pa.Table]
_SIDE = "_dedup_join_side"


class RayShuffle:
    """``components.Shuffle`` over Ray Data; every regrouped result is materialized."""

    def __init__(self, partition_mb: float):
        self.partition_bytes = partition_mb * 1e6
        self.min_partitions = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def by_key(
        self, data: ray.data.Dataset, key: str, fn: PartitionFn, prepare: PartitionFn | None = None
    ) -> ray.data.Dataset:
        data = data.materialize()  # a no-op for the materialized results of earlier steps
        # Sized on the input: ``prepare`` runs fused into the shuffle's map tasks.
        partitions = self.partitions(data.size_bytes())
        if prepare is not None:
            data = data.map_batches(prepare, batch_format="pyarrow")
        return (
            bound_shuffle_input(data, self.partition_bytes)
            .repartition(partitions, keys=[key])
            .map_batches(fn, batch_size=None, batch_format="pyarrow")  # batch = one whole partition
            .materialize()
        )

    def total(self, data: ray.data.Dataset, column: str) -> int:
        return int(data.sum(column) or 0)

    def partitions(self, size_bytes: int) -> int:
        return max(self.min_partitions, math.ceil(size_bytes / self.partition_bytes))


def shuffle_join(
    left: ray.data.Dataset,
    left_schema: pa.Schema,
    right: ray.data.Dataset,
    right_schema: pa.Schema,
    key: str,
    fn: JoinFn,
    partitions: int,
    map_input_bytes: float,
) -> ray.data.Dataset:
    """``fn(left_rows, right_rows)`` once per hash partition on ``key``, both sides' rows together,
    in ``partitions`` partitions, each shuffle map task taking about ``map_input_bytes`` at most.

    Both sides are padded to one schema (the other side's columns null, plus a side marker) so
    that they can travel through a single shuffle; each partition is split apart again before
    ``fn`` sees it.
    """
    shared = (set(left_schema.names) & set(right_schema.names)) - {key}
    if shared:
        raise ValueError(f"shuffle_join: both sides have columns {sorted(shared)}")
    padded = pa.schema(
        [field.with_nullable(True) for field in left_schema]
        + [field.with_nullable(True) for field in right_schema if field.name != key]
        + [pa.field(_SIDE, pa.int8())]
    )
    tagged = [
        side.map_batches(_pad, fn_kwargs={"schema": padded, "side": number}, batch_format="pyarrow")
        for number, side in enumerate((left, right))
    ]
    return (
        bound_shuffle_input(tagged[0].union(tagged[1]), map_input_bytes)
        .repartition(partitions, keys=[key])
        .map_batches(
            _split_and_join,
            fn_kwargs={"schemas": (left_schema, right_schema), "fn": fn},
            batch_size=None,
            batch_format="pyarrow",
        )
    )


def bound_shuffle_input(data: ray.data.Dataset, max_bytes: float) -> ray.data.Dataset:
    """``data``, its shuffles' map tasks taking at most about ``max_bytes`` of input each.

    The setting lives in the context that ``data`` shares with the datasets it derives from; it is
    only ever lowered, to no less than one block per map task.
    """
    context = data.context
    if context.shuffle_input_batch_bytes > max_bytes:
        context.shuffle_input_batch_bytes = max(1, int(max_bytes))
    return data


def broadcast_join(left: ray.data.Dataset, right: pa.Table, fn: JoinFn) -> ray.data.Dataset:
    """``fn(batch, right)`` for every batch of ``left``; ``right`` is put in the object store once."""
    return left.map_batches(_join_with_object, fn_kwargs={"right": [ray.put(right)], "fn": fn}, batch_format="pyarrow")


def _pad(batch: pa.Table, schema: pa.Schema, side: int) -> pa.Table:
    columns = [
        batch[field.name] if field.name in batch.column_names else pa.nulls(batch.num_rows, field.type)
        for field in schema
        if field.name != _SIDE
    ]
    side_column = pa.array(np.full(batch.num_rows, side, dtype=np.int8))
    return pa.Table.from_arrays([*columns, side_column], schema=schema)


def _split_and_join(partition: pa.Table, schemas: tuple[pa.Schema, pa.Schema], fn: JoinFn) -> pa.Table:
    sides = [
        partition.filter(pc.equal(partition[_SIDE], number)).select(schema.names).cast(schema)
        for number, schema in enumerate(schemas)
    ]
    return fn(*sides)


def _join_with_object(batch: pa.Table, right: list, fn: JoinFn) -> pa.Table:
    # The reference travels inside a list so Ray hands it over as a reference, fetched here once
    # per task from the node's object store.
    return fn(batch, ray.get(right[0]))
