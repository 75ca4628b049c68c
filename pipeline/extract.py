"""HTML -> plain text: keep a page's main content, leave out menus, footers, scripts and styles.

Two extractors are supported. ``benchmarks/extract.py`` measures both, as configured here, on the
181 pages of the article-extraction benchmark (see ``benchmarks/results/extract.md``): trafilatura
scores about three points higher on token F1, resiliparse runs 9-16 times faster. Resiliparse is the
default because extraction is the costliest step of a crawl build, and the line-level filters and
dedup that follow remove much of the boilerplate it lets through.

Rows with no ``html`` (WET, JSONL and Parquet inputs already carry ``text``) pass through unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import PositiveInt
from resiliparse.extract.html2text import extract_plain_text

from pipeline.config import config_dataclass
from pipeline.documents import alive_rows, replace_column, with_drops
from pipeline.stage import Stage

TextExtractor = Callable[[str], str | None]


@config_dataclass
class ExtractConfig:
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    # False keeps all visible text of the page, boilerplate included.
    main_content: bool = True
    # trafilatura's trade-off between leaving out boilerplate and keeping all of the article;
    # resiliparse has no such switch. "precision" scored best on the benchmark.
    favour: Literal["precision", "balanced", "recall"] = "precision"
    # Readers' comment sections, link target URLs and image alt texts are rarely prose worth training on.
    comments: bool = False
    links: bool = False
    alt_texts: bool = False
    # A page this large is almost never one article, and parsing it costs time and memory out of
    # proportion: such rows are dropped unparsed.
    max_html_bytes: PositiveInt = 5_000_000


def make_text_extractor(config: ExtractConfig) -> TextExtractor:
    """The configured extractor as one function: html -> text (None or blank when nothing is found)."""
    if config.extractor == "resiliparse":
        return partial(
            extract_plain_text,
            main_content=config.main_content,
            # Keep line breaks between blocks: the line-level quality filters downstream need them.
            preserve_formatting=True,
            comments=config.comments,
            links=config.links,
            alt_texts=config.alt_texts,
            # Bylines, dates and share counts above an article are not prose.
            post_meta=False,
        )
    # Imported only when configured: trafilatura loads lxml's HTML cleaner and language data, which
    # every actor of a resiliparse build would pay for nothing.
    import trafilatura

    if not config.main_content:
        return trafilatura.html2txt
    return partial(
        trafilatura.extract,
        favor_precision=config.favour == "precision",
        favor_recall=config.favour == "recall",
        include_comments=config.comments,
        include_links=config.links,
        include_images=config.alt_texts,
    )


class Extract(Stage):
    """Sets ``text`` from ``html`` and clears ``html``; drops pages that yield no text.

    Drop reasons: ``extract:too_large`` (value: html bytes), ``extract:empty`` (nothing but
    whitespace came out), ``extract:error`` (the extractor raised on this page).
    """

    name = "extract"

    def __init__(self, config: ExtractConfig | None = None) -> None:
        super().__init__()
        self.config = config or ExtractConfig()
        self.extract_text = make_text_extractor(self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        html_bytes = pc.binary_length(batch["html"]).to_pylist()
        texts = batch["text"].to_pylist()
        reasons: list[str | None] = [None] * len(batch)
        values: list[float | None] = [None] * len(batch)
        for i, html in alive_rows(batch, "html"):
            if html is None:
                continue
            size = html_bytes[i]
            if size > self.config.max_html_bytes:
                reasons[i], values[i] = f"{self.name}:too_large", float(size)
                continue
            try:
                text = (self.extract_text(html) or "").strip()
            except Exception:  # one pathological page must never fail the whole batch
                reasons[i] = f"{self.name}:error"
                continue
            if not text:
                reasons[i] = f"{self.name}:empty"
                continue
            texts[i] = text
            self.stats["extracted"] += 1
            self.stats["html_bytes"] += size
            self.stats["text_bytes"] += len(text.encode())
        batch = replace_column(batch, "text", texts)
        # Every row's html has now become text or been dropped: free it rather than carry it on.
        batch = replace_column(batch, "html", pa.nulls(len(batch)))
        return with_drops(batch, reasons, values)
