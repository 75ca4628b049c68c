"""Runs a configured list of stages over one batch, timing each.

Ray Data runs a ``StageChain`` as one ``map_batches`` operator backed by an actor pool: every stage
(and any model it loads) is built once per actor, and each batch flows through all stages without
leaving the worker. Unit tests and baselines call it directly with a ``pa.Table``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import pyarrow as pa

from pipeline.stage import Stage

StageFactory = Callable[[], Stage]


class StageChain:
    def __init__(self, factories: list[StageFactory]):
        self.stages = [factory() for factory in factories]
        self.seconds: Counter[str] = Counter()

    def __call__(self, batch: pa.Table) -> pa.Table:
        for stage in self.stages:
            start = time.perf_counter()
            batch = stage(batch)
            self.seconds[stage.name] += time.perf_counter() - start
        return batch

    def take_stats(self) -> dict[str, Any]:
        """Seconds per stage and each stage's own counters since the last call."""
        stats = {
            "seconds": dict(self.seconds),
            "counters": {stage.name: dict(stage.take_stats()) for stage in self.stages},
        }
        self.seconds.clear()
        return stats
