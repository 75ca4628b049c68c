"""Do our Gopher, C4 and FineWeb filters decide like datatrove's? Share of identical decisions.

Data: the 181 real pages of the article-extraction benchmark
(``$CORPUS_DIR/web/html/article-extraction-benchmark``), extracted by our ``Extract`` stage
(resiliparse, main content); then, as a harder second set, every other document of the corpus's
``web/`` folder (Common Crawl WARC and WET records, wget crawls, cc_net JSONL: multilingual and
spammy), read by our readers and extracted the same way. Each filter runs on every document on its
own (not chained), next to datatrove 0.10.1's equivalent with the same thresholds, in one process.

Reported per filter: identical keep/drop decisions, identical drop reasons (datatrove's reason
names mapped to ours), each side's drop count, and every disagreement with both measured values.
A disagreement is then re-run with our filter splitting words with datatrove's spaCy tokenizer:
if the decisions then agree, its class is "word splitting", otherwise "rule". For C4, whose job is
to rewrite text, it also reports the share of kept documents whose output text is identical.

    bash benchmarks/setup_datatrove.sh          # once: datatrove + spaCy in benchmarks/.venv-datatrove
    benchmarks/.venv-datatrove/bin/python benchmarks/filter_agreement.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Callable, Iterator

import pyarrow as pa

from pipeline.corpus import corpus_path
from pipeline.documents import alive_mask, stable_id, table_from_rows
from pipeline.extract import Extract
from pipeline.filters import gopher, words
from pipeline.stages import build_stage
from pipeline.filters.c4 import C4QualityFilter
from pipeline.readers import ReadConfig, read_file
from pipeline.stage import Drop

try:
    from datatrove.data import Document
    from datatrove.pipeline import filters as dt
    from datatrove.utils.text import split_into_words as datatrove_words
except ImportError:
    sys.exit(
        "datatrove is missing: run `bash benchmarks/setup_datatrove.sh`, "
        "then use benchmarks/.venv-datatrove/bin/python"
    )

# The FineWeb preset's duplicated-line threshold (jobs/configs/stages/fineweb.yaml); datatrove's
# FineWebQualityFilter gets the same value.
FINEWEB_DUPLICATE_LINE_CHARS = 0.01

# datatrove's reason names -> ours.
REASONS = {
    "dup_para_frac": "duplicate_paragraphs",
    "dup_para_char_frac": "duplicate_paragraph_chars",
    "dup_line_frac": "duplicate_lines",
    "dup_line_char_frac": "duplicate_line_chars",
    **{f"top_{n}_gram": f"top_{n}_gram" for n in range(2, 5)},
    **{f"duplicated_{n}_n_grams": f"duplicate_{n}_grams" for n in range(5, 11)},
    "gopher_short_doc": "too_few_words",
    "gopher_long_doc": "too_many_words",
    "gopher_below_avg_threshold": "short_words",
    "gopher_above_avg_threshold": "long_words",
    "gopher_too_many_hashes": "hash_ratio",
    "gopher_too_many_ellipsis": "ellipsis_ratio",
    "gopher_too_many_bullets": "bullet_lines",
    "gopher_too_many_end_ellipsis": "ellipsis_lines",
    "gopher_below_alpha_threshold": "alpha_words",
    "gopher_enough_stop_words": "stop_words",
    "line_punct_ratio": "line_punct",
    "short_line_ratio": "short_lines",
    "char_dup_ratio": "duplicate_line_chars",
    "list_ratio": "newline_ratio",
}


@dataclass
class Pair:
    """One of our filters and datatrove's equivalent, configured alike."""

    name: str
    ours: Callable[[], Any]
    theirs: Callable[[], Any]


def filter_pairs() -> list[Pair]:
    fineweb_dup = FINEWEB_DUPLICATE_LINE_CHARS
    return [
        Pair("gopher_repetition", lambda: build_stage("gopher_repetition"), dt.GopherRepetitionFilter),
        Pair("gopher_quality", lambda: build_stage("gopher_quality"), dt.GopherQualityFilter),
        Pair(
            "c4_quality (FineWeb: no terminal-punct rule)",
            lambda: build_stage("c4_quality", {"filter_no_terminal_punct": False}),
            lambda: dt.C4QualityFilter(filter_no_terminal_punct=False),
        ),
        Pair("c4_quality (C4 defaults)", lambda: build_stage("c4_quality"), dt.C4QualityFilter),
        Pair(
            f"fineweb_quality (duplicate line chars {fineweb_dup})",
            lambda: build_stage("fineweb_quality", {"max_duplicate_line_chars": fineweb_dup}),
            lambda: dt.FineWebQualityFilter(char_duplicates_ratio=fineweb_dup),
        ),
        Pair(
            "fineweb_quality (duplicate line chars 0.1, the paper's)",
            lambda: build_stage("fineweb_quality", {"max_duplicate_line_chars": 0.1}),
            lambda: dt.FineWebQualityFilter(char_duplicates_ratio=0.1),
        ),
    ]


def extracted(batch: pa.Table) -> list[tuple[str, str, str]]:
    """(id, url, text) of every document our extractor keeps."""
    batch = Extract()(batch)
    batch = batch.filter(alive_mask(batch))
    return list(zip(batch["id"].to_pylist(), batch["url"].to_pylist(), batch["text"].to_pylist()))


def load_documents() -> list[tuple[str, str, str]]:
    """The benchmark pages, extracted, in a fixed order."""
    root = corpus_path("web", "html", "article-extraction-benchmark")
    truth = json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))
    pages = sorted(truth)
    rows = [
        {
            "id": stable_id("article-extraction-benchmark", page),
            "url": truth[page].get("url"),
            "source": "article-extraction-benchmark",
            "html": gzip.decompress((root / "html" / f"{page}.html.gz").read_bytes()).decode("utf-8", "replace"),
        }
        for page in pages
    ]
    return extracted(table_from_rows(rows))


def load_other_web_documents() -> list[tuple[str, str, str]]:
    """Every WARC, WET and JSONL document under the corpus's web/ folder, read and extracted."""
    root = corpus_path("web")
    patterns = ("warc/*.warc.gz", "wet/*.wet.gz", "jsonl/*.jsonl.gz")
    paths = sorted(str(path) for pattern in patterns for path in root.glob(pattern))
    rows = [row for path in paths for row in read_file(path, ReadConfig()) if row.get("drop_reason") is None]
    return extracted(table_from_rows(rows))


def our_decision(stage, text: str) -> tuple[Drop | None, str]:
    """Our stage's drop (None: kept) and the text it would keep."""
    if isinstance(stage, C4QualityFilter):
        result = stage.transform(text)
        return (result, "") if isinstance(result, Drop) else (None, result)
    return stage.check(text), text


def their_decision(block, doc_id: str, text: str) -> tuple[str | None, str]:
    """datatrove's drop reason, mapped to ours (None: kept), and the text it would keep."""
    doc = Document(text=text, id=doc_id)
    result = block.filter(doc)
    kept, reason = result if isinstance(result, tuple) else (result, None)
    return (None if kept else REASONS.get(reason, reason or "dropped")), doc.text


@contextmanager
def datatrove_word_splitting() -> Iterator[None]:
    """Our filters, splitting words (and C4's sentences) with datatrove's spaCy tokenizer."""
    modules = (gopher, words, sys.modules["pipeline.filters.fineweb"])
    saved = [module.split_words for module in modules]
    for module in modules:
        module.split_words = datatrove_words
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.split_words = original


def compare(pair: Pair, documents: list[tuple[str, str, str]]) -> dict[str, Any]:
    ours, theirs = pair.ours(), pair.theirs()
    rewrites = isinstance(ours, C4QualityFilter)
    same_decision = same_reason = ours_dropped = theirs_dropped = same_text = both_kept = 0
    disagreements = []
    for doc_id, _, text in documents:
        our_drop, our_text = our_decision(ours, text)
        their_reason, their_text = their_decision(theirs, doc_id, text)
        ours_dropped += our_drop is not None
        theirs_dropped += their_reason is not None
        if (our_drop is None) == (their_reason is None):
            same_decision += 1
            same_reason += our_drop is None or our_drop.reason == their_reason
            if our_drop is None:
                both_kept += 1
                same_text += our_text == their_text
            continue
        with datatrove_word_splitting():
            respun, _ = our_decision(pair.ours(), text)
        disagreements.append(
            {
                "id": doc_id,
                "ours": None if our_drop is None else f"{our_drop.reason} ({our_drop.value})",
                "datatrove": their_reason,
                "class": "word splitting" if (respun is None) == (their_reason is None) else "rule",
            }
        )
    n = len(documents)
    return {
        "filter": pair.name,
        "documents": n,
        "identical_decisions": same_decision / n,
        "identical_reasons": same_reason / n,
        "dropped_ours": ours_dropped,
        "dropped_datatrove": theirs_dropped,
        "identical_kept_text": same_text / both_kept if rewrites and both_kept else None,
        "disagreements": disagreements,
    }


def word_agreement(documents: list[tuple[str, str, str]]) -> tuple[float, float]:
    """Share of documents whose word lists are identical, and share of words in those lists."""
    same_docs = same_words = total_words = 0
    for _, _, text in documents:
        ours, theirs = words.split_words(text), datatrove_words(text)
        same_docs += ours == theirs
        total_words += len(theirs)
        same_words += len(theirs) if ours == theirs else sum(a == b for a, b in zip(ours, theirs))
    return same_docs / len(documents), same_words / total_words


def report(title: str, documents: list[tuple[str, str, str]]) -> dict[str, Any]:
    same_docs, same_words = word_agreement(documents)
    print(f"\n## {title}: {len(documents)} documents")
    print(f"word splitting: identical word lists in {same_docs:.1%} of documents, {same_words:.2%} of words\n")
    results = [compare(pair, documents) for pair in filter_pairs()]
    print("| filter | identical decisions | identical reasons | dropped (ours / datatrove) | identical kept text |")
    print("|---|---|---|---|---|")
    for r in results:
        kept_text = "" if r["identical_kept_text"] is None else f"{r['identical_kept_text']:.1%}"
        print(
            f"| {r['filter']} | {r['identical_decisions']:.1%} | {r['identical_reasons']:.1%} "
            f"| {r['dropped_ours']} / {r['dropped_datatrove']} | {kept_text} |"
        )
    for r in results:
        for d in r["disagreements"]:
            print(f"  {r['filter']}: {d['id']} ours={d['ours']} datatrove={d['datatrove']} class={d['class']}")
    return {"documents": len(documents), "word_agreement": [same_docs, same_words], "filters": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    print(f"datatrove {version('datatrove')}, spaCy {version('spacy')}")
    results = {
        "article_extraction_benchmark": report("article-extraction benchmark pages", load_documents()),
        "other_web": report("rest of web/ (WARC, WET, JSONL)", load_other_web_documents()),
    }
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
