"""Speed and quality of the two HTML extractors, each run through our ``Extract`` stage as configured.

Data: the 181 real news/blog pages of scrapinghub's article-extraction benchmark, with each page's
article body as ground truth (``$CORPUS_DIR/web/html/article-extraction-benchmark``).

Speed: the whole page set as one batch through ``Extract``, repeated; we quote the median docs/s.
Extractors alternate within each repeat so that noise on a shared machine hits both alike.

Quality, per page, then averaged over pages (every page weighs the same, as upstream):
- token P/R/F1: tokens are lowercased ``\\w+`` runs (Unicode words; punctuation and markup are not
  tokens). Predicted and true texts are bags of tokens; true positives are the tokens they share,
  counted with multiplicity. precision = shared / predicted, recall = shared / true.
- shingle P/R/F1: the same overlap over 4-token shingles of case-kept tokens, the unit upstream's
  ``evaluate.py`` scores with; it also punishes text that is right word by word but out of order.
A page the stage dropped counts as an empty prediction: precision 0, recall 0.

    .venv/bin/python benchmarks/extract.py [--repeats 5] [--set favour=balanced ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import re
import statistics
import time
from collections import Counter
from importlib.metadata import version
from typing import Callable

from pipeline.config import apply_override, validate
from pipeline.corpus import corpus_path
from pipeline.documents import stable_id, table_from_rows
from pipeline.extract import Extract, ExtractConfig

EXTRACTORS = ("resiliparse", "trafilatura")
WORD = re.compile(r"\w+")
SHINGLE = 4


def load_pages() -> tuple[list[str], list[str], list[str]]:
    """Page ids, their HTML and their ground-truth article bodies, in a fixed order."""
    root = corpus_path("web", "html", "article-extraction-benchmark")
    truth = json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)
    htmls = [gzip.decompress((root / "html" / f"{page}.html.gz").read_bytes()).decode("utf-8", "replace")
             for page in ids]
    return ids, htmls, [truth[page]["articleBody"] for page in ids]


def overlap(true: Counter, predicted: Counter) -> tuple[float, float, float]:
    shared = sum((true & predicted).values())
    precision = shared / sum(predicted.values()) if predicted else 0.0
    recall = shared / sum(true.values()) if true else 1.0  # nothing to find: nothing was missed
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def tokens(text: str) -> Counter:
    return Counter(WORD.findall(text.lower()))


def shingles(text: str) -> Counter:
    words = WORD.findall(text)
    if len(words) <= SHINGLE:  # a short text is one shingle, as upstream scores it
        return Counter([tuple(words)]) if words else Counter()
    return Counter(tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1))


def mean_scores(
    truths: list[str], predictions: list[str], units: Callable[[str], Counter]
) -> tuple[float, float, float]:
    per_page = [overlap(units(true), units(predicted)) for true, predicted in zip(truths, predictions)]
    return tuple(statistics.mean(page[k] for page in per_page) for k in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="ExtractConfig override applied to both extractors")
    args = parser.parse_args()

    ids, htmls, truths = load_pages()
    batch = table_from_rows([{"id": stable_id("aeb", page), "html": html} for page, html in zip(ids, htmls)])
    html_mb = sum(len(html.encode()) for html in htmls) / 1e6
    stages = {}
    for name in EXTRACTORS:
        data: dict = {"extractor": name}
        for override in args.overrides:
            apply_override(data, override)
        stages[name] = Extract(validate(ExtractConfig, data, prefix="extract"))

    outputs = {name: stage(batch) for name, stage in stages.items()}  # also warms caches
    seconds: dict[str, list[float]] = {name: [] for name in EXTRACTORS}
    for _ in range(args.repeats):
        for name, stage in stages.items():
            start = time.perf_counter()
            stage(batch)
            seconds[name].append(time.perf_counter() - start)

    print(f"python {platform.python_version()}, {platform.machine()}, resiliparse {version('resiliparse')}, "
          f"trafilatura {version('trafilatura')}; {len(ids)} pages, {html_mb:.1f} MB of HTML, "
          f"median of {args.repeats} repeats")
    for name, stage in stages.items():
        print(f"{name}: {stage.config}")
    header = (f"{'extractor':<12} {'docs/s':>7} {'MB/s':>6} {'dropped':>7} | "
              f"{'tok P':>5} {'tok R':>5} {'tok F1':>6} | {'sh P':>5} {'sh R':>5} {'sh F1':>5}")
    print(header)
    print("-" * len(header))
    docs_per_s = {}
    for name in EXTRACTORS:
        median = statistics.median(seconds[name])
        docs_per_s[name] = len(ids) / median
        texts = [text or "" for text in outputs[name]["text"].to_pylist()]
        dropped = Counter(reason for reason in outputs[name]["drop_reason"].to_pylist() if reason)
        token_p, token_r, token_f1 = mean_scores(truths, texts, tokens)
        shingle_p, shingle_r, shingle_f1 = mean_scores(truths, texts, shingles)
        print(f"{name:<12} {docs_per_s[name]:7.1f} {html_mb / median:6.1f} {sum(dropped.values()):7d} | "
              f"{token_p:5.3f} {token_r:5.3f} {token_f1:6.3f} | {shingle_p:5.3f} {shingle_r:5.3f} {shingle_f1:5.3f}")
    print(f"speed ratio resiliparse / trafilatura: {docs_per_s['resiliparse'] / docs_per_s['trafilatura']:.1f}x")


if __name__ == "__main__":
    main()
