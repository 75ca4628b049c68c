"""Speed of each filtering stage next to datatrove's equivalent block, and of the whole FineWeb chain in
Ray Data next to a plain Python loop over the same ``StageChain``.

Data: the 181 pages of the article-extraction benchmark, extracted by our ``Extract`` stage (see
``filter_agreement.py``), as one batch.

Per stage: docs/s per core = documents / CPU seconds of this process (``time.process_time``), so
other people's work on a shared machine does not count against either side. Each repeat runs our
stage, then datatrove's block (``block.run`` over fresh ``Document`` objects), in alternating order;
we quote medians. Our word-split cache is emptied before every timed pass of ours ("cold": only
documents earlier in the same pass can have warmed it); "warm" passes keep it, as a long build does.
Both sides get the same thresholds (the FineWeb preset's) and, for the URL filter, the same UT1
adult blocklists (4.6 M domains, 20 k URLs, from datatrove's wheel). datatrove's language filter is
given the same bundled lid.176.ftz model (it would download lid.176.bin) through a small adapter,
because fasttext-predict returns Python floats where datatrove expects numpy ones.

Chain: the FineWeb preset (``jobs/configs/stages/fineweb.yaml``) over the pages copied ``--copies``
times, in batches of ``--batch-size``. Plain loop: build a ``StageChain`` and call it on each batch.
Ray Data: ``from_arrow(blocks).map_batches(StageChain, concurrency=N, batch_format="pyarrow")``,
materialized, on a local Ray of 2 CPUs. Both include building the stages (Ray: in each actor).
The loop runs before Ray is started, so no idle Ray process competes with it. Wall clock, median;
Ray's overhead per worker is ``N x ray_seconds / loop_seconds - 1``. Two workers need two free
cores to show it: on a busy shared machine the figure measures the other tenants too.

    bash benchmarks/setup_datatrove.sh      # once
    benchmarks/.venv-datatrove/bin/python benchmarks/filters.py [--repeats 5] [--copies 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import yaml

from filter_agreement import FINEWEB_DUPLICATE_LINE_CHARS, Document, dt, load_documents
from fineweb_datatrove import NumpyScores
from pipeline.chain import StageChain
from pipeline.documents import table_from_rows
from pipeline.filters import gopher, words
from pipeline.stages import build_stage
from pipeline.filters.language import bundled_model_path

PRESET = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "stages" / "fineweb.yaml"


def datatrove_language_filter():
    from fasttext.FastText import _FastText

    # Created without datatrove's __new__, which insists on the fasttext-numpy2-wheel distribution:
    # fasttext-predict provides the same `fasttext` module, and two must not share one environment.
    block = object.__new__(dt.LanguageFilter)
    block.__init__(languages=["en"], language_threshold=0.65)
    block.model._model = NumpyScores(_FastText(model_path=str(bundled_model_path())))
    return block


def datatrove_url_filter(domains: Path, urls: Path):
    from tldextract import TLDExtract

    block = dt.URLFilter(
        use_integrated_lists=False,
        extra_domains=domains.read_text().splitlines(),
        extra_urls=urls.read_text().splitlines(),
    )
    block.tldextractor = TLDExtract(suffix_list_urls=())  # the bundled suffix-list snapshot: no download
    return block


def datatrove_pii():
    from datatrove.pipeline.formatters import PIIFormatter

    return PIIFormatter()


def stage_pairs(lists: Path) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    domains, urls = lists / "domains", lists / "urls"
    return [
        (
            "url_filter",
            lambda: build_stage(
                "url_filter", {"domain_blocklist_files": [str(domains)], "url_substring_blocklist_files": [str(urls)]}
            ),
            lambda: datatrove_url_filter(domains, urls),
        ),
        ("language", lambda: build_stage("language"), datatrove_language_filter),
        ("gopher_repetition", lambda: build_stage("gopher_repetition"), dt.GopherRepetitionFilter),
        ("gopher_quality", lambda: build_stage("gopher_quality"), dt.GopherQualityFilter),
        (
            "c4_quality",
            lambda: build_stage("c4_quality", {"filter_no_terminal_punct": False}),
            lambda: dt.C4QualityFilter(filter_no_terminal_punct=False),
        ),
        (
            "fineweb_quality",
            lambda: build_stage("fineweb_quality", {"max_duplicate_line_chars": FINEWEB_DUPLICATE_LINE_CHARS}),
            lambda: dt.FineWebQualityFilter(char_duplicates_ratio=FINEWEB_DUPLICATE_LINE_CHARS),
        ),
        ("pii", lambda: build_stage("pii"), datatrove_pii),
    ]


def unpack_blocklists(into: Path) -> Path:
    """The UT1-derived adult lists datatrove ships (``domains``, ``urls``), unpacked into ``into``."""
    from datatrove.utils._import_utils import ASSETS_PATH

    with tarfile.open(os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz")) as archive:
        archive.extractall(into, filter="data")
    return into


def cold() -> None:
    words.clear_cache()
    gopher._WORD_KINDS.clear()


def cpu_seconds(run: Callable[[], Any]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def time_stages(documents, lists: Path, repeats: int, only: list[str] | None) -> list[dict[str, Any]]:
    batch = table_from_rows([{"id": i, "url": u, "text": t} for i, u, t in documents])
    n = len(documents)
    rows = []
    for name, make_ours, make_theirs in stage_pairs(lists):
        if only and name not in only:
            continue
        ours, theirs = make_ours(), make_theirs()
        list(theirs.run(iter([Document(text=t, id=i, metadata={"url": u}) for i, u, t in documents[:5]])))  # warm-up
        cold_s, warm_s, theirs_s = [], [], []
        for repeat in range(repeats):
            def run_theirs():
                fresh = [Document(text=t, id=i, metadata={"url": u}) for i, u, t in documents]
                start = time.process_time()
                list(theirs.run(iter(fresh)))
                theirs_s.append(time.process_time() - start)

            if repeat % 2:
                run_theirs()
            cold()
            cold_s.append(cpu_seconds(lambda: ours(batch)))
            warm_s.append(cpu_seconds(lambda: ours(batch)))
            if not repeat % 2:
                run_theirs()
        row = {
            "stage": name,
            "ours_cold": n / statistics.median(cold_s),
            "ours_warm": n / statistics.median(warm_s),
            "datatrove": n / statistics.median(theirs_s),
        }
        row["ratio_cold"] = row["ours_cold"] / row["datatrove"]
        row["ratio_warm"] = row["ours_warm"] / row["datatrove"]
        rows.append(row)
        print(
            f"| {name} | {row['ours_cold']:,.0f} | {row['ours_warm']:,.0f} | {row['datatrove']:,.0f} "
            f"| **{row['ratio_cold']:.1f}x** | {row['ratio_warm']:.1f}x |",
            flush=True,
        )
    return rows


def preset_factories() -> list[Callable[[], Any]]:
    steps = [next(iter(entry.items())) for entry in yaml.safe_load(PRESET.read_text())["stages"]]
    return [lambda name=name, options=options: build_stage(name, options or {}) for name, options in steps]


def plain_loop(batches: list[pa.Table]) -> float:
    cold()
    start = time.perf_counter()
    chain = StageChain(preset_factories())
    for batch in batches:
        chain(batch)
    return time.perf_counter() - start


def ray_data(blocks: list[pa.Table], workers: int, batch_size: int) -> float:
    import ray

    start = time.perf_counter()
    ray.data.from_arrow(blocks).map_batches(
        StageChain,
        fn_constructor_args=(preset_factories(),),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=workers,
    ).materialize()
    return time.perf_counter() - start


def time_chain(documents, copies: int, batch_size: int, repeats: int) -> dict[str, Any]:
    import ray

    rows = [{"id": f"{copy}-{i}", "url": u, "text": t} for copy in range(copies) for i, u, t in documents]
    table = table_from_rows(rows)
    # Blocks of four batches: enough blocks that both actors always have work.
    blocks = [table.slice(start, 4 * batch_size) for start in range(0, len(table), 4 * batch_size)]
    batches = [table.slice(start, batch_size) for start in range(0, len(table), batch_size)]
    loop = statistics.median(plain_loop(batches) for _ in range(repeats))  # before Ray runs at all
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # address="local": a new instance even if another `ray start` cluster runs on this machine
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, object_store_memory=500_000_000, log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ray_data(blocks[:1], 1, batch_size)  # warm-up: modules imported, Ray Data started
        one = statistics.median(ray_data(blocks, 1, batch_size) for _ in range(repeats))
        two = statistics.median(ray_data(blocks, 2, batch_size) for _ in range(repeats))
    finally:
        ray.shutdown()
    n = len(table)
    return {
        "documents": n,
        "loop_docs_s": n / loop,
        "ray1_docs_s": n / one,
        "ray2_docs_s": n / two,
        # the extra time per worker: N workers ideally take 1/N of the loop's time
        "overhead_1": one / loop - 1,
        "overhead_2": 2 * two / loop - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=20, help="copies of the page set for the chain timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stages", nargs="*", help="time only these stages")
    parser.add_argument("--skip-stages", action="store_true", help="time only the chain")
    parser.add_argument("--skip-chain", action="store_true", help="time only the stages")
    args = parser.parse_args()

    documents = load_documents()
    print(
        f"{len(documents)} documents; {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, datatrove {version('datatrove')}, "
        f"spaCy {version('spacy')}, ray {version('ray')}, numpy {version('numpy')}"
    )
    if not args.skip_stages:
        print(f"\nper stage, docs/s per core (median of {args.repeats}):\n")
        print("| stage | ours (cold) | ours (warm) | datatrove | ratio (cold) | ratio (warm) |")
        print("|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            time_stages(documents, unpack_blocklists(Path(tmp)), args.repeats, args.stages)
    if not args.skip_chain:
        r = time_chain(documents, args.copies, args.batch_size, max(1, args.repeats // 2))
        print(f"\nFineWeb chain over {r['documents']:,} documents, wall clock (median):\n")
        print("| run | docs/s | Ray overhead per worker |")
        print("|---|---|---|")
        print(f"| plain Python loop, 1 process | {r['loop_docs_s']:,.0f} | |")
        print(f"| Ray Data, 1 worker | {r['ray1_docs_s']:,.0f} | {r['overhead_1']:+.1%} |")
        print(f"| Ray Data, 2 workers | {r['ray2_docs_s']:,.0f} | {r['overhead_2']:+.1%} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
