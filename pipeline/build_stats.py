"""The actors that run a build's stages, and the one that gathers their counts.

Every count comes from where the work happens: rows read per input file (``read_and_count``),
per-stage seconds and counters from each chain actor; the driver reads them once at the end.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray

from pipeline.chain import StageChain
from pipeline.readers import ReadConfig, read_files
from pipeline.stages import make_stage

@ray.remote(num_cpus=0)
class StatsCollector:
    """Gathers per-stage seconds and counters from every chain actor."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.counters: dict[str, Counter[str]] = {}
        # Rows read per input file, kept by path: a read task that Ray retries reports its file again.
        self.rows_read: dict[str, int] = {}

    def add(self, stats: dict[str, Any]) -> None:
        self.seconds.update(stats["seconds"])
        for stage, counts in stats["counters"].items():
            self.counters.setdefault(stage, Counter()).update(counts)

    def add_read(self, path: str, rows: int) -> None:
        self.rows_read[path] = rows

    def get(self) -> dict[str, Any]:
        return {
            "seconds": dict(self.seconds),
            "counters": {k: dict(v) for k, v in self.counters.items()},
            "rows_read": sum(self.rows_read.values()),
        }


def read_and_count(files, config: ReadConfig, collector):
    """``map_batches`` function: ``read_files``, telling the collector how many rows each file gave,
    so the build can check its output against a count taken before any stage ran."""
    for i in range(len(files)):
        rows = 0
        for table in read_files(files.slice(i, 1), config):
            rows += len(table)
            yield table
        ray.get(collector.add_read.remote(files["path"][i].as_py(), rows))


class ChainActor(StageChain):
    """A ``StageChain`` that reports its stats to the collector after each batch."""

    def __init__(self, stages: list[tuple[str, Any]], collector):
        super().__init__([lambda name=name, config=config: make_stage(name, config) for name, config in stages])
        self.collector = collector

    def __call__(self, batch):
        batch = super().__call__(batch)
        self.collector.add.remote(self.take_stats())
        return batch
