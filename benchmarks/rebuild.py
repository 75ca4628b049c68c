"""A rebuild that adds 1% new documents, against a full build of the same documents.

    .venv/bin/python benchmarks/rebuild.py [--documents 100000] [--new-fraction 0.01]

Documents: JSON lines of 8-24 sentences drawn from the shared sentence files (``$CORPUS_DIR``), with
a few exact copies so that dedup has work; 100 files of the base documents and one file of the new
ones. Both sides run on one local Ray of 2 CPUs, with the config a scheduled rebuild uses: exact and
MinHash (FineWeb preset) dedup, then GPT-2 token shards.

- full: one build of every file, base and new (``rebuild`` of a fresh root: its first version);
- incremental: the base files built first (not timed), then the new file lands and ``rebuild``
  makes the next version, token shards included.

Each side's wall time covers the rebuild and its token shards; bytes written are the sizes of the
files the side added under the dataset and token roots. Target: incremental <= 5% of full, both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import ray  # noqa: E402

from pipeline.build import tokenize_version, tokens_root  # noqa: E402
from pipeline.build_config import BuildConfig  # noqa: E402
from pipeline.config import validate  # noqa: E402
from pipeline.corpus import corpus_path  # noqa: E402
from pipeline.rebuild import rebuild  # noqa: E402

FILES = 100


def sentences() -> list[str]:
    found = []
    for path in sorted(corpus_path("lang", "sentences").glob("*.txt")):
        found += [line.strip() for line in path.read_text().splitlines() if len(line.split()) >= 4]
    return found


def write_documents(folder: Path, name: str, count: int, pool: list[str], rng: random.Random) -> None:
    with open(folder / name, "w") as out:
        previous = None
        for number in range(count):
            text = " ".join(rng.choice(pool) for _ in range(rng.randint(8, 24)))
            if previous is not None and number % 50 == 0:
                text = previous  # an exact copy now and then
            out.write(json.dumps({"id": f"{name}-{number}", "text": text}) + "\n")
            previous = text


def config_for(inputs: Path, root: Path) -> BuildConfig:
    return validate(BuildConfig, {
        "dataset": {"name": "bench", "version": "v1"},
        "inputs": [str(inputs)],
        "output": str(root),
        "stages": [{"dedup": {"exact": {"enabled": True}, "minhash": {"preset": "fineweb"}}}],
        "shards": {"target_mb": 16},
        "tokenize": {"tokenizer": "gpt2", "context_length": 1024, "shard_tokens": 20_000_000},
    })


def sizes(*roots: str) -> dict[str, int]:
    return {str(path): path.stat().st_size for root in roots for path in Path(root).rglob("*") if path.is_file()}


def timed_rebuild(config: BuildConfig) -> tuple[float, int]:
    """Seconds and bytes written by one rebuild with its token shards."""
    roots = (config.output, tokens_root(config))
    before = sizes(*roots)
    started = time.perf_counter()
    result = rebuild(config)
    tokenize_version(config, result.version)
    seconds = time.perf_counter() - started
    after = sizes(*roots)
    written = sum(size for path, size in after.items() if before.get(path) != size)
    print(f"  {result.outcome} {result.version}: {result.manifest['documents']:,} documents, "
          f"{seconds:.1f} s, {written / 1e6:.1f} MB written", flush=True)
    return seconds, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    args = parser.parse_args()

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    work = Path(tempfile.mkdtemp(prefix="rebuild-bench-"))
    base, new = work / "base", work / "new"
    base.mkdir()
    new.mkdir()
    rng, pool = random.Random(0), sentences()
    for number in range(FILES):
        write_documents(base, f"part-{number:03d}.jsonl", args.documents // FILES, pool, rng)
    write_documents(new, "landed-000.jsonl", int(args.documents * args.new_fraction), pool, rng)

    print("full build of every file:", flush=True)
    everything = work / "everything"
    everything.mkdir()
    for path in [*base.iterdir(), *new.iterdir()]:
        os.link(path, everything / path.name)
    full_seconds, full_bytes = timed_rebuild(config_for(everything, work / "full"))

    print("incremental: the base files, then the new one:", flush=True)
    growing = work / "growing"
    growing.mkdir()
    for path in base.iterdir():
        os.link(path, growing / path.name)
    config = config_for(growing, work / "incremental")
    timed_rebuild(config)
    for path in new.iterdir():
        os.link(path, growing / path.name)
    seconds, written = timed_rebuild(config)

    shutil.rmtree(work)
    print(f"incremental / full: time {seconds / full_seconds:.1%} ({seconds:.1f} s / {full_seconds:.1f} s), "
          f"bytes written {written / full_bytes:.1%} ({written / 1e6:.2f} MB / {full_bytes / 1e6:.1f} MB); "
          "target <= 5% for both")


if __name__ == "__main__":
    main()
