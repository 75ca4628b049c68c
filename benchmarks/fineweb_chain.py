"""The whole FineWeb chain, WARC to deduplicated Parquet: our build on Ray against datatrove's own
FineWeb pipeline, same input, same blocks and thresholds, same number of workers.

Input (``fineweb_warc.py``): ``--records`` response records (20,000 by default) in ``--files`` WARC
files: the 181 real article pages, and pages around documents made from the shared corpus's real
text with planted near-copies.

- ours: ``pipeline.build.build`` of a config with the FineWeb chain (URL filter with datatrove's
  lists, extraction, language, Gopher repetition, Gopher quality, C4, FineWeb quality, MinHash dedup
  with the fineweb preset, exact hashing off as in FineWeb) writing Parquet shards, on a local Ray of
  ``--workers`` CPUs started before the clock (as a cluster is), with no warm-up;
- datatrove: ``fineweb_datatrove.run_datatrove``: its five ``LocalPipelineExecutor`` runs in a row,
  each with ``--workers`` worker processes (``tasks`` = the number of files, as the example shards
  by file).

Speed: input records per second of wall time, median over ``--repeats``, sides alternating. Both
sides get the same worker count on the same cores, so the ratio of docs/s is the ratio per core.

Agreement: every record's final decision (kept in the output, or not) on both sides. datatrove
keeps an arbitrary member of each duplicate cluster (union by size), we keep the smallest document
id; so each of datatrove's clusters is relabelled to keep the member our rule would keep, and the
comparison measures the filtering and the clustering, not the tie-break. Also reported: agreement
of the filters alone (reaching dedup), and of dedup on the documents both sides' filters passed.

    bash benchmarks/setup_datatrove.sh                         # once
    benchmarks/.venv-datatrove/bin/python benchmarks/fineweb_chain.py [--records 20000] [--repeats 3] 2> chain.log
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

# Imported as the ``benchmarks`` package from the repository root, as datatrove's worker processes
# import the blocks of fineweb_datatrove.py.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

try:
    from datatrove.utils._import_utils import ASSETS_PATH  # noqa: E402

    from benchmarks.fineweb_datatrove import DatatroveOutcome, run_datatrove  # noqa: E402
except ImportError:
    sys.exit("datatrove is missing: run `bash benchmarks/setup_datatrove.sh`, "
             "then use benchmarks/.venv-datatrove/bin/python")
from benchmarks.fineweb_warc import write_warcs  # noqa: E402
from pipeline.build import build  # noqa: E402
from pipeline.build_config import BuildConfig  # noqa: E402
from pipeline.config import validate  # noqa: E402

TARGET_AGREEMENT, TARGET_SPEED = 0.98, 3.0


@dataclass
class OurOutcome:
    seconds: float
    after_filters: set[str]  # urls
    kept: set[str]
    id_of: dict[str, str]  # url -> document id


def our_config(warcs: Path, output: Path, extractor: str, lists: Path) -> BuildConfig:
    """The FineWeb chain with the lists datatrove's URL filter integrates (``lists``: its UT1 adult
    domains and URLs, unpacked; its word lists as they lie in its package)."""
    assets = Path(ASSETS_PATH)
    return validate(BuildConfig, {
        "dataset": {"name": "fineweb-bench", "version": "v1"},
        "inputs": [str(warcs / "*.warc.gz")],
        "output": str(output),
        "stages": [
            {"url_filter": {
                "domain_blocklist_files": [str(lists / "domains")],
                "url_blocklist_files": [str(lists / "urls")],
                "banned_words_files": [str(assets / "banned_words.txt")],
                "soft_banned_words_files": [str(assets / "soft_banned_words.txt")],
                "banned_subwords_files": [str(assets / "banned_subwords.txt")],
            }},
            {"extract": {"extractor": extractor}},
            {"language": {"languages": ["en"], "min_score": 0.65}},
            {"gopher_repetition": {}},
            {"gopher_quality": {}},
            {"c4_quality": {"filter_no_terminal_punct": False}},
            {"fineweb_quality": {"max_duplicate_line_chars": 0.01}},
            {"dedup": {"exact": {"enabled": False}, "minhash": {"preset": "fineweb"}}},
        ],
        "shards": {"target_mb": 64},
    })


def run_ours(config: BuildConfig, workers: int) -> OurOutcome:
    os.environ.setdefault("RAY_num_workers_soft_limit", str(4 * workers))
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        started = time.perf_counter()
        result = build(config)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    build_folder = Path(config.output) / config.dataset.version / result["build"]
    id_of, after_filters, kept = {}, set(), set()
    for path in sorted((build_folder / "shards").glob("*.parquet")):
        for row in pq.read_table(path, columns=["id", "url"]).to_pylist():
            id_of[row["url"]] = row["id"]
            kept.add(row["url"])
            after_filters.add(row["url"])
    for path in sorted((build_folder / "audit").glob("*.parquet")):
        for row in pq.read_table(path, columns=["id", "url", "drop_reason"]).to_pylist():
            id_of[row["url"]] = row["id"]
            if row["drop_reason"].startswith("dedup:"):
                after_filters.add(row["url"])
    return OurOutcome(seconds, after_filters, kept, id_of)


def relabelled(theirs: DatatroveOutcome, id_of: dict[str, str]) -> set[str]:
    """datatrove's kept set, each duplicate cluster keeping the member with the smallest of our ids."""
    members: dict[int, list[str]] = {}
    for url, cluster in theirs.cluster_of.items():
        members.setdefault(cluster, []).append(url)
    kept = {url for url in theirs.kept if url not in theirs.cluster_of}
    kept |= {min(urls, key=lambda url: id_of.get(url, url)) for urls in members.values()}
    return kept


def agreement(urls: list[str], ours: OurOutcome, theirs: DatatroveOutcome) -> dict[str, float]:
    their_kept = relabelled(theirs, ours.id_of)
    both_filtered = [url for url in urls if url in ours.after_filters and url in theirs.after_filters]
    return {
        "final decisions": _share(urls, lambda url: (url in ours.kept) == (url in their_kept)),
        "filters alone": _share(urls, lambda url: (url in ours.after_filters) == (url in theirs.after_filters)),
        "dedup, where both filters passed": _share(both_filtered, lambda url: (url in ours.kept) == (url in their_kept)),
        "ours kept": len(ours.kept) / len(urls),
        "datatrove kept": len(their_kept) / len(urls),
    }


def _share(items: list[str], same) -> float:
    return sum(1 for item in items if same(item)) / max(1, len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extractor", choices=["resiliparse", "trafilatura"], default="resiliparse")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"

    work = Path(tempfile.mkdtemp(prefix="fineweb-chain-"))
    lists = work / "lists"
    with tarfile.open(Path(ASSETS_PATH) / "url_filterblacklistsv0_3_0.tar.gz") as archive:
        archive.extractall(lists, filter="data")
    warcs = work / "warc"
    paths, urls = write_warcs(warcs, args.records, args.files)
    print(f"{args.records:,} records in {len(paths)} WARC files ({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB), "
          f"{args.workers} workers, extractor {args.extractor}", flush=True)

    ours_seconds, theirs_seconds, figures = [], [], None
    for repeat in range(args.repeats):
        sides = ["datatrove", "ours"] if repeat % 2 == 0 else ["ours", "datatrove"]
        for side in sides:
            folder = work / f"{side}-{repeat}"
            if side == "ours":
                ours = run_ours(our_config(warcs, folder, args.extractor, lists), args.workers)
                ours_seconds.append(ours.seconds)
                print(f"  ours: {ours.seconds:.1f} s, {args.records / ours.seconds:.0f} docs/s", flush=True)
            else:
                theirs = run_datatrove(warcs, folder, args.files, args.workers, args.extractor)
                theirs_seconds.append(theirs.seconds)
                stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in theirs.stage_seconds.items())
                print(f"  datatrove: {theirs.seconds:.1f} s ({stages}), {args.records / theirs.seconds:.0f} docs/s",
                      flush=True)
        figures = agreement(urls, ours, theirs)
        shutil.rmtree(work / f"ours-{repeat}")
        shutil.rmtree(work / f"datatrove-{repeat}")

    ours_median, theirs_median = statistics.median(ours_seconds), statistics.median(theirs_seconds)
    ratio = theirs_median / ours_median
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"ray {version('ray')}, datatrove {version('datatrove')}, resiliparse {version('resiliparse')}, "
          f"trafilatura {version('trafilatura')}")
    print(f"docs/s per core (median of {args.repeats}, {args.workers} workers each): "
          f"ours {args.records / ours_median / args.workers:.0f}, "
          f"datatrove {args.records / theirs_median / args.workers:.0f}: "
          f"**{ratio:.2f}x** (target >= {TARGET_SPEED}x)")
    for name, value in figures.items():
        print(f"  {name}: {value:.4f}")
    print(f"identical final decisions {figures['final decisions']:.2%} (target >= {TARGET_AGREEMENT:.0%})")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
