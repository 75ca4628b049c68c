"""WARC parsing: warcio against FastWARC (what our reader uses), and what our whole reader costs.

Input: the WARC files of ``fineweb_warc.py`` (``--records`` response records in 8 per-record-gzip
files, real text of the shared corpus) and the shared corpus's real Common Crawl, wget and ClueWeb09
WARC samples, each read ``--repeats`` times; CPU seconds of this one process
(``time.process_time``), medians. Three sides, each reading every record's payload:

- warcio: ``ArchiveIterator`` over the gzip file, HTTP headers parsed, payload read;
- FastWARC: ``ArchiveIterator`` over the same file (its own gzip stream), HTTP parsed, payload read;
- our reader: ``pipeline.readers.read_file``, i.e. FastWARC over our truncation-reporting gunzip,
  plus HTTP decoding with its fallback, charset detection and decoding, ids, dump, counted skips:
  every row a build gets.

The first ratio is what the parser swap saved; the last says how much of the reader's time the
parser is.

    .venv/bin/python benchmarks/warc_reader.py [--records 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from fastwarc.warc import ArchiveIterator as FastIterator  # noqa: E402
from fastwarc.warc import WarcRecordType  # noqa: E402
from warcio.archiveiterator import ArchiveIterator as WarcioIterator  # noqa: E402

from benchmarks.fineweb_warc import write_warcs  # noqa: E402
from pipeline.corpus import corpus_path  # noqa: E402
from pipeline.readers import ReadConfig, read_file  # noqa: E402


def with_warcio(paths: list[Path]) -> int:
    payload = 0
    for path in paths:
        with open(path, "rb") as stream:
            for record in WarcioIterator(stream):
                if record.rec_type == "response":
                    payload += len(record.content_stream().read())
    return payload


def with_fastwarc(paths: list[Path]) -> int:
    payload = 0
    for path in paths:
        with open(path, "rb") as stream:
            for record in FastIterator(stream, record_types=WarcRecordType.response, parse_http=True):
                payload += len(record.reader.read())
    return payload


def with_our_reader(paths: list[Path]) -> int:
    config = ReadConfig()
    return sum(len(row.get("html") or "") for path in paths for row in read_file(str(path), config))


def cpu_seconds(read, paths: list[Path]) -> float:
    started = time.process_time()
    read(paths)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warc-reader-") as work:
        generated, _ = write_warcs(Path(work), args.records, files=8)
        real = sorted(corpus_path("web", "warc").glob("*.warc.gz"))
        print(f"python {platform.python_version()}, warcio {version('warcio')}, fastwarc {version('fastwarc')}; "
              f"CPU seconds of one process, median of {args.repeats}")
        print("\n| input | MB | warcio s | FastWARC s | FastWARC speed-up | our reader s "
              "| FastWARC share of our reader |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, paths in ((f"{args.records:,} generated records", generated), ("shared corpus WARC samples", real)):
            sides = {"warcio": with_warcio, "fastwarc": with_fastwarc, "ours": with_our_reader}
            seconds = {name: [] for name in sides}
            for _ in range(args.repeats):
                for name, read in sides.items():
                    seconds[name].append(cpu_seconds(read, paths))
            median = {name: statistics.median(values) for name, values in seconds.items()}
            size = sum(path.stat().st_size for path in paths) / 1e6
            print(f"| {label} | {size:.1f} | {median['warcio']:.2f} | {median['fastwarc']:.2f} | "
                  f"{median['warcio'] / median['fastwarc']:.1f}x | {median['ours']:.2f} | "
                  f"{median['fastwarc'] / median['ours']:.0%} |")


if __name__ == "__main__":
    main()
