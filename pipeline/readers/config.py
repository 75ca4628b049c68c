"""How inputs are read: the ``read:`` section of a build config."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pipeline.config import config_dataclass

Format = Literal["auto", "warc", "wet", "jsonl", "parquet", "text", "html"]

@config_dataclass
class ReadConfig:
    format: Format = "auto"
    # Documents above this size are skipped as ``too_large``: one pathological page must not
    # stall an extractor or blow a worker's memory.
    max_document_bytes: int = 10_000_000
    html_content_types: list[str] = field(default_factory=lambda: ["text/html", "application/xhtml+xml"])
    # Field names for JSONL and Parquet inputs; a missing id field means ids are derived.
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    time_field: str = "created"
    dump_field: str = "dump"
    # The crawl dump of documents whose record (a JSONL or Parquet field, a WARC's warcinfo record)
    # and path (``CC-MAIN-YYYY-WW``) name none; None leaves it null.
    dump: str | None = None
    # Documents per output batch: bounds the memory of one read task on big files.
    batch_size: int = 256
    # A plain-text file is one document, or one per blank-line-separated paragraph (a book or a play,
    # whose paragraphs are the units worth filtering, deduplicating and splitting between train and val).
    text_documents: Literal["file", "paragraphs"] = "file"
