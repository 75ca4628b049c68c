"""Dedup throughput and scaling: ours on Ray Data against datasketch, per core.

For each corpus size, the same documents (``dedup_corpus.py``: real text with planted copies) go
through:

- the baseline, ``datasketch`` MinHash signatures in as many processes as ours has Ray CPUs, then
  MinHashLSH + union-find in this process (``dedup_sides.run_datasketch``);
- ours, ``deduplicate`` with the FineWeb preset (MinHash alone, like datasketch) on a local Ray
  with 2 CPUs, from the documents in Ray's object store (blocks of 2,000, as the build hands over
  its materialized dataset) to every output document materialized (``dedup_sides.run_ours``): once
  as configured by default (union-find on the driver below a million edges), once forced onto the
  distributed path (star rounds and shuffle joins, ``union_find_edge_limit=0``), and once with our
  default exact-duplicate pass added (``DedupConfig()``), which datasketch has no counterpart for.

Reported: seconds and documents per second of each, the ratio, time per document relative to the
smallest size, and the peak memory of the largest single Ray worker process during our runs
(private resident memory, RssAnon, sampled every 50 ms; shared object-store pages excluded).
Each size gets a fresh local Ray; before timing, one small run of each side warms up its workers
(imports, lookup tables), as any long-lived cluster has. Both sides use the same number of
processes, so the ratio is the ratio per core.

    .venv/bin/python benchmarks/dedup.py                                  # 25k and 50k documents
    .venv/bin/python benchmarks/dedup.py --sizes 25000,50000,100000,200000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

# Run as a script, Python puts this folder first on the path, where benchmarks/tokenize.py would
# shadow the standard library's tokenize; import from the repository root instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import datasketch  # noqa: E402
import ray  # noqa: E402

from benchmarks.dedup_corpus import generate  # noqa: E402
from benchmarks.dedup_sides import (  # noqa: E402
    RAY_CPUS,
    as_dataset,
    datasketch_pool,
    run_datasketch,
    run_ours,
    start_local_ray,
)
from pipeline.dedup import DedupConfig, ExactConfig  # noqa: E402


class WorkerMemory:
    """Peak private memory (RssAnon) per Ray worker process of this driver's local cluster."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def largest_mb(self) -> float:
        return max(self.peak.values(), default=0) / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(os.getpid()):
                rss = _rss_anon(pid)
                if rss is not None and _is_worker(pid):
                    self.peak[pid] = max(self.peak.get(pid, 0), rss)
            time.sleep(self.interval)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def _rss_anon(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"ray::")
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25000,50000", help="comma-separated document counts")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per size; medians are reported")
    parser.add_argument("--object-store-gb", type=float, default=3.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"python {platform.python_version()}, ray {ray.__version__}, datasketch {datasketch.__version__}, "
          f"{os.cpu_count()} CPUs visible, Ray given {RAY_CPUS}, datasketch signing in {RAY_CPUS} processes; "
          f"repeats {args.repeats} (medians)")
    # Like for like: MinHash alone, as datasketch does (and as FineWeb runs it). Our default adds
    # an exact-duplicate pass (its own normalization and hash), measured beside it.
    minhash_only = ExactConfig(enabled=False)
    default = DedupConfig(exact=minhash_only)
    distributed = DedupConfig(exact=minhash_only, union_find_edge_limit=0)
    with_exact = DedupConfig()
    rows = []
    pool = datasketch_pool()
    for size in sizes:
        corpus = generate(size, seed=size)
        # A fresh Ray per size: worker processes keep the memory their allocator once took, so
        # reusing them would carry the peaks of earlier sizes over.
        start_local_ray(args.object_store_gb)
        warm_table = generate(2000, seed=99).table
        run_datasketch(warm_table, default.minhash, pool)  # imports in the pool's processes
        warm = as_dataset(warm_table)
        run_ours(warm, default)
        run_ours(warm, distributed)
        run_ours(warm, with_exact)
        documents = as_dataset(corpus.table)
        times = {"datasketch": [], "ours": [], "ours distributed": [], "ours + exact": []}
        memory = {"ours": 0.0, "ours distributed": 0.0, "ours + exact": 0.0}
        removed = {}
        sides = [("ours", default), ("ours distributed", distributed), ("ours + exact", with_exact)]
        for repeat in range(args.repeats):
            baseline = run_datasketch(corpus.table, default.minhash, pool)
            times["datasketch"].append(baseline.seconds)
            removed["datasketch"] = len(baseline.survivor_of)
            # Whichever of ours ran first in a repeat was the slowest in trials (by up to a third),
            # so the order rotates: with 3 repeats each side runs first once.
            for name, config in sides[repeat % len(sides):] + sides[: repeat % len(sides)]:
                with WorkerMemory() as sampler:
                    outcome, result = run_ours(documents, config)
                print(f"    repeat {repeat + 1}: {name} {outcome.seconds:.1f}s", flush=True)
                times[name].append(outcome.seconds)
                memory[name] = max(memory[name], sampler.largest_mb())
                removed[name] = len(outcome.survivor_of)
                if name == "ours distributed":
                    rounds = result.stats["components"]["rounds"]
        del documents, warm
        ray.shutdown()
        median = {name: statistics.median(values) for name, values in times.items()}
        rows.append((size, median, memory, removed, rounds))
        print(f"{size:>8} docs: datasketch {median['datasketch']:.1f}s, ours {median['ours']:.1f}s "
              f"({median['datasketch'] / median['ours']:.2f}x), distributed {median['ours distributed']:.1f}s "
              f"({median['datasketch'] / median['ours distributed']:.2f}x, {rounds} rounds), "
              f"ours + exact {median['ours + exact']:.1f}s ({median['datasketch'] / median['ours + exact']:.2f}x); "
              f"largest worker {memory['ours']:.0f} / {memory['ours distributed']:.0f} MB; removed {removed}",
              flush=True)

    smallest = rows[0][0]
    print(f"\n| docs | datasketch s | ours s | ours docs/s | ratio | distributed s | ratio | per-doc time vs {smallest} (ours / distributed) | largest worker MB (ours / distributed) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {name: rows[0][1][name] / smallest for name in ("ours", "ours distributed")}
    for size, median, memory, _, _ in rows:
        per_doc = [median[name] / size / base[name] for name in ("ours", "ours distributed")]
        print(f"| {size:,} | {median['datasketch']:.1f} | {median['ours']:.1f} | {size / median['ours']:,.0f} | "
              f"{median['datasketch'] / median['ours']:.2f}x | {median['ours distributed']:.1f} | "
              f"{median['datasketch'] / median['ours distributed']:.2f}x | {per_doc[0]:.2f} / {per_doc[1]:.2f} | "
              f"{memory['ours']:.0f} / {memory['ours distributed']:.0f} |")


if __name__ == "__main__":
    main()
