"""Tokenization throughput per core: the build's Ray Data encoding stage vs tiktoken in a plain loop.

    ours:      pipeline.tokenize.encode_documents (read Parquet -> DocumentEncoder actors -> token rows,
               materialized as the build does), MB of UTF-8 text per second, divided by Ray's CPUs
    baseline:  tiktoken's encode_ordinary_batch(num_threads=1) over the same documents in batches of the
               same size, in a plain loop: in this process on one core, and in --cpus processes at
               once (each its share of the documents), which loads the machine as Ray does

All run in the same process run, alternating, --repeats times; medians are printed with the ratios
(target: ours >= 0.8x the baseline per core). Ray's wall time includes starting the actors and
loading the tokenizer in each, as a build pays it; that fixed cost is also measured on its own (the
stage over one-line documents). On a shared, loaded machine wall time says more about the neighbours
than about the code, so CPU time is compared too: the plain loop's process time against the encoder
tasks' "Remote cpu time" in Ray Data's stats.

Input: real text from the shared corpus (tinyshakespeare split at blank lines, the Leipzig sentences
of 75 languages in documents of 20 sentences, Alice in Wonderland's paragraphs, the Common Crawl WET
pages), repeated until --mb megabytes with each copy's documents prefixed by the copy number, written
as 8 Parquet files.

    .venv/bin/python benchmarks/tokenization.py --mb 40 --repeats 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.corpus import corpus_path
from pipeline.readers import ReadConfig, read_file
from pipeline.tokenize import TokenizeConfig, encode_documents
from pipeline.tokenizer import load_tokenizer


def real_documents() -> list[str]:
    texts = corpus_path("text", "tinyshakespeare.txt").read_text().split("\n\n")
    texts += corpus_path("text", "gutenberg-11-alice.txt").read_text().split("\n\n")
    for path in sorted(corpus_path("lang", "sentences").glob("*.txt")):
        lines = path.read_text().splitlines()
        texts += ["\n".join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
    wet = corpus_path("web", "wet", "cc-main-2016-50-sample.warc.wet.gz")
    texts += [row["text"] for row in read_file(str(wet), ReadConfig()) if row.get("text")]
    return [text for text in texts if text.strip()]


def benchmark_documents(megabytes: float) -> list[str]:
    base = real_documents()
    size = sum(len(text.encode()) for text in base)
    copies = max(1, round(megabytes * 1e6 / size))
    return [f"{copy} {text}" for copy in range(copies) for text in base]


def write_parquet(texts: list[str], folder: Path, n_files: int = 8) -> list[str]:
    paths = []
    for index in range(n_files):
        part = texts[index::n_files]
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(pa.table({"id": [f"{index}-{i}" for i in range(len(part))], "text": part}), path)
        paths.append(str(path))
    return paths


def plain_loop(texts: list[str], batch_size: int, start_at: float | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of encoding ``texts``."""
    encoding = load_tokenizer("gpt2")
    if start_at is not None:  # parallel runs: everyone starts together, tokenizers loaded
        time.sleep(max(0.0, start_at - time.time()))
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch_size):
        encoding.encode_ordinary_batch(texts[start : start + batch_size], num_threads=1)
    return time.perf_counter() - started, time.process_time() - cpu


def parallel_plain_loops(texts: list[str], batch_size: int, processes: int) -> float:
    """Seconds until the slowest of ``processes`` plain loops, each over its share, is done."""
    shares = [texts[i::processes] for i in range(processes)]
    start_at = time.time() + 5.0
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return max(wall for wall, _ in pool.starmap(plain_loop, [(share, batch_size, start_at) for share in shares]))


def ray_stage(files: list[str], config: TokenizeConfig) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the encoder actors' tasks, from Ray Data's stats)."""
    started = time.perf_counter()
    encoded = encode_documents(files, config).materialize()
    seconds = time.perf_counter() - started
    stats = encoded.stats().split("MapBatches(DocumentEncoder)", 1)[1]
    cpu = re.search(r"Remote cpu time: .*?([\d.]+)(us|ms|s) total", stats)
    return seconds, float(cpu.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[cpu.group(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=40.0, help="megabytes of text to encode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray (and actors)")
    args = parser.parse_args()

    import ray

    texts = benchmark_documents(args.mb)
    megabytes = sum(len(text.encode()) for text in texts) / 1e6
    config = TokenizeConfig(encode_workers=args.cpus)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray starts its workers at niceness 15; on a shared machine that starves them next to the
    # baseline, which runs at 0 in this process. Same priority for both.
    os.environ["RAY_worker_niceness"] = "0"
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, object_store_memory=2_000_000_000,
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"{len(texts):,} documents, {megabytes:.1f} MB; Ray with {args.cpus} CPUs, {args.cpus} encoder actors at most")
    single, single_cpu, parallel, ours, ours_cpu, fixed = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        files = write_parquet(texts, Path(folder))
        (Path(folder) / "tiny").mkdir()
        tiny = write_parquet(["One line."] * args.cpus, Path(folder) / "tiny", n_files=args.cpus)
        for repeat in range(args.repeats):
            wall, cpu = plain_loop(texts, config.batch_size)
            single.append(megabytes / wall)
            single_cpu.append(megabytes / cpu)
            parallel.append(megabytes / parallel_plain_loops(texts, config.batch_size, args.cpus) / args.cpus)
            wall, cpu = ray_stage(files, config)
            ours.append(megabytes / wall / args.cpus)
            ours_cpu.append(megabytes / cpu)
            fixed.append(ray_stage(tiny, config)[0])
            print(f"repeat {repeat}: plain loop {single[-1]:.2f} MB/s/core alone, {parallel[-1]:.2f} MB/s/core "
                  f"x{args.cpus} processes, {single_cpu[-1]:.2f} MB per CPU-second; Ray Data stage "
                  f"{ours[-1]:.2f} MB/s/core ({wall:.1f} s, of which ~{fixed[-1]:.1f} s fixed), "
                  f"{ours_cpu[-1]:.2f} MB per CPU-second of its encoders", flush=True)
    ray.shutdown()
    alone, loaded, mine = statistics.median(single), statistics.median(parallel), statistics.median(ours)
    base_cpu, mine_cpu = statistics.median(single_cpu), statistics.median(ours_cpu)
    print(f"median MB/s per core: plain loop {alone:.2f} alone, {loaded:.2f} in {args.cpus} processes; "
          f"Ray Data stage {mine:.2f} ({mine / alone:.2f}x, {mine / loaded:.2f}x; target >= 0.8x); "
          f"MB per CPU-second: plain loop {base_cpu:.2f}, Ray Data encoders {mine_cpu:.2f} ({mine_cpu / base_cpu:.2f}x); "
          f"fixed cost of the stage {statistics.median(fixed):.1f} s")


if __name__ == "__main__":
    main()
