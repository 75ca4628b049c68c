"""JSONL, Parquet and plain-text / saved-HTML inputs -> rows."""

from __future__ import annotations

import json
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.readers.charset import charset_candidates, decode
from pipeline.readers.config import ReadConfig
from pipeline.readers.rows import doc_id, dump_of_path, skipped
from pipeline.readers.streams import GZIP_ERRORS, gzip_reason, open_decompressed


def read_jsonl(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    try:
        stream = open_decompressed(path)
    except (OSError, *GZIP_ERRORS) as error:
        yield skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    line_number = 0
    try:
        for line_number, line in enumerate(_lines(stream), start=1):
            if not line.strip():
                continue
            yield _json_document(path, name, line, line_number, config)
    except GZIP_ERRORS as error:
        yield skipped(path, name, f"line:{line_number + 1}", gzip_reason(error))


def _lines(stream, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines of a byte stream, each complete line yielded before a read error can surface."""
    rest = b""
    while chunk := stream.read(chunk_size):
        *complete, rest = (rest + chunk).split(b"\n")
        yield from complete
    if rest:
        yield rest


def _json_document(path: str, name: str, line: bytes, line_number: int, config: ReadConfig) -> dict[str, Any]:
    key = f"line:{line_number}"
    if len(line) > config.max_document_bytes:
        return skipped(path, name, key, "too_large")
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return skipped(path, name, key, "undecodable")
    except json.JSONDecodeError:
        return skipped(path, name, key, "malformed_record")
    if not isinstance(record, dict):
        return skipped(path, name, key, "malformed_record")
    return _field_document(path, name, record, key, config)


def _field_document(path: str, name: str, record: dict[str, Any], key: str, config: ReadConfig) -> dict[str, Any]:
    """A JSONL line or Parquet row -> document; an existing id is kept as it is."""
    given_id = record.get(config.id_field)
    document_id = str(given_id) if given_id not in (None, "") else doc_id(name, key)
    url = record.get(config.url_field)
    text = record.get(config.text_field)
    if not isinstance(text, str):
        return {**skipped(path, name, key, "malformed_record", url), "id": document_id}
    if not text.strip():
        return {**skipped(path, name, key, "empty_payload", url), "id": document_id}
    fetch_time = record.get(config.time_field)
    dump = record.get(config.dump_field)
    return {
        "id": document_id,
        # A dump name, or a Common Crawl path naming one (``crawl-data/CC-MAIN-2020-16/segments/...``).
        "dump": (dump_of_path(dump) or dump) if isinstance(dump, str) and dump else None,
        "url": url if isinstance(url, str) else None,
        "source": path,
        "fetch_time": str(fetch_time) if fetch_time is not None else None,
        "content_type": "text/plain",
        "text": text,
    }


def read_parquet(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    try:
        parquet = pq.ParquetFile(fsspec.open(path, "rb").open())
    except (OSError, pa.ArrowException) as error:
        yield skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    if config.text_field not in parquet.schema_arrow.names:
        yield skipped(path, name, "open", f"missing_column:{config.text_field}")
        return
    fields = (config.text_field, config.id_field, config.url_field, config.time_field, config.dump_field)
    wanted = [c for c in fields if c in parquet.schema_arrow.names]
    row_number = 0
    for batch in parquet.iter_batches(batch_size=config.batch_size, columns=wanted):
        for record in batch.to_pylist():
            row_number += 1
            text = record.get(config.text_field)
            if isinstance(text, str) and len(text.encode()) > config.max_document_bytes:
                yield skipped(path, name, f"row:{row_number}", "too_large")
                continue
            yield _field_document(path, name, record, f"row:{row_number}", config)


def read_whole_file(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    """A saved HTML page is one document; a plain-text file is one, or one per paragraph (``text_documents``)."""
    try:
        payload = open_decompressed(path).read(config.max_document_bytes + 1)
    except (OSError, *GZIP_ERRORS) as error:
        yield skipped(path, name, "file", f"unreadable_file:{type(error).__name__}")
        return
    if len(payload) > config.max_document_bytes:
        yield skipped(path, name, "file", "too_large")
        return
    text = decode(payload, charset_candidates("", payload) if fmt == "html" else ["utf-8"])
    if text is None:
        yield skipped(path, name, "file", "undecodable")
    elif not text.strip():
        yield skipped(path, name, "file", "empty_payload")
    elif fmt == "html":
        yield {"id": doc_id(name, "file"), "source": path, "content_type": "text/html", "html": text}
    elif config.text_documents == "file":
        yield {"id": doc_id(name, "file"), "source": path, "content_type": "text/plain", "text": text}
    else:
        # Blank runs between paragraphs are separators, not content: they are the only text left out.
        for number, paragraph in enumerate(p for p in text.split("\n\n") if p.strip()):
            key = f"paragraph:{number}"
            yield {"id": doc_id(name, key), "source": path, "content_type": "text/plain", "text": paragraph}
