"""Raw crawl files -> documents in the one schema of ``documents.py``.

Formats: WARC (response records), WET (conversion records), JSONL (gzipped or not), Parquet with a
text column, plain text (one document per file or per paragraph) and saved HTML pages (one document
per file, gzipped or not). Inputs are local paths, globs or fsspec URLs; a folder stands for every
file below it in one of these formats (the others are logged, as they are not inputs).

Every record in an input ends up as exactly one row: a document, or a row dropped by the ``read``
stage whose ``drop_reason`` says why it was skipped (``read:truncated_gzip``,
``read:malformed_header``, ``read:undecodable``, ``read:empty_payload``,
``read:non_html_content_type``, ``read:too_large``, ...). Bad input never stops the job.

Modules: ``config`` (the ``read:`` settings), ``inputs`` (listing files), ``streams`` (gunzip that
reports truncation), ``warc`` (WARC and WET, parsed by FastWARC), ``records`` (JSONL, Parquet,
text, HTML), ``charset`` (bytes -> text), ``rows`` (ids, dumps and counted skips); this module
dispatches to them.
"""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa

from pipeline.documents import table_from_rows
from pipeline.readers.config import ReadConfig
from pipeline.readers.inputs import detect_format, list_inputs
from pipeline.readers.records import read_jsonl, read_parquet, read_whole_file
from pipeline.readers.rows import dump_of_path, skipped
from pipeline.readers.warc import read_warc

__all__ = ["ReadConfig", "detect_format", "dump_of_path", "list_inputs", "read_file", "read_files"]


def read_files(files: pa.Table, config: ReadConfig) -> Iterator[pa.Table]:
    """``map_batches`` function: a batch of ``{path, size}`` rows -> document batches.

    A generator, so one huge input file never has to fit in one block.
    """
    rows: list[dict[str, Any]] = []
    names = files["name"].to_pylist() if "name" in files.column_names else [None] * len(files)
    for path, name in zip(files["path"].to_pylist(), names):
        for row in read_file(path, config, name):
            rows.append(row)
            if len(rows) >= config.batch_size:
                yield table_from_rows(rows)
                rows = []
    if rows:
        yield table_from_rows(rows)


def read_file(path: str, config: ReadConfig, name: str | None = None) -> Iterator[dict[str, Any]]:
    """One input file's rows. ``name`` names the file in its records' ids (``list_inputs`` gives
    it); by default the file's base name."""
    name = name or path.rsplit("/", 1)[-1]
    fmt = config.format if config.format != "auto" else detect_format(path)
    if fmt is None:
        yield skipped(path, name, "file", "unknown_format")
        return
    reader = {"warc": read_warc, "wet": read_warc, "jsonl": read_jsonl, "parquet": read_parquet,
              "text": read_whole_file, "html": read_whole_file}[fmt]
    dump = dump_of_path(path) or config.dump
    for row in reader(path, name, config, fmt):
        if row.get("dump") is None:
            row["dump"] = dump
        yield row
