"""Raw crawl files -> documents in the one schema of ``documents.py``.

Formats: WARC (response records), WET (conversion records), JSONL (gzipped or not), Parquet with a
text column, plain text (one document per file or per paragraph) and saved HTML pages (one document
per file, gzipped or not). Inputs are local paths, globs or fsspec URLs; a folder stands for every
file below it in one of these formats (the others are logged, as they are not inputs).

Every record in an input ends up as exactly one row: a document, or a row dropped by the ``read``
stage whose ``drop_reason`` says why it was skipped (``read:truncated_gzip``,
``read:malformed_header``, ``read:undecodable``, ``read:empty_payload``,
``read:non_html_content_type``, ``read:too_large``, ...). Bad input never stops the job.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import os
import re
import zlib
from dataclasses import field
from typing import Any, Iterator, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from resiliparse.parse.encoding import detect_encoding
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from pipeline.config import config_dataclass
from pipeline.documents import stable_id, table_from_rows

logger = logging.getLogger(__name__)

Format = Literal["auto", "warc", "wet", "jsonl", "parquet", "text", "html"]

FORMAT_SUFFIXES: list[tuple[str, str]] = [
    (".warc.wet.gz", "wet"),
    (".wet.gz", "wet"),
    (".wet", "wet"),
    (".warc.gz", "warc"),
    (".warc", "warc"),
    (".jsonl.gz", "jsonl"),
    (".json.gz", "jsonl"),
    (".jsonl", "jsonl"),
    (".parquet", "parquet"),
    (".txt", "text"),
    (".html.gz", "html"),
    (".html", "html"),
    (".htm", "html"),
]


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


# ---------------------------------------------------------------------------------------------
# Listing inputs


def list_inputs(patterns: list[str]) -> list[dict[str, Any]]:
    """Expand paths, globs and folders to a sorted, de-duplicated list of ``{path, size, name}``.

    ``name`` is what the file's records' ids hash: for a remote file its full URL; for a local one
    its path relative to the input root (the folder given, a glob's folder, a file's own folder).
    So ids stay the same when the whole root moves (laptop -> another disk), and same-named files
    in different folders (``en/part-0.jsonl``, ``de/part-0.jsonl``) get different ids.
    """
    found: dict[str, tuple[int, str]] = {}
    for pattern in patterns:
        fs, root = fsspec.core.url_to_fs(pattern)
        # The folder given, or the one holding a file or a glob's first wildcard.
        base = root if fs.isdir(root) else os.path.dirname(re.split(r"[*?\[]", root, maxsplit=1)[0])
        if fs.isdir(root):
            every_file = fs.find(root)
            candidates = [p for p in every_file if detect_format(p) is not None]
            if len(candidates) < len(every_file):
                others = sorted(set(every_file) - set(candidates))
                logger.warning("input %s: %d files in no input format are not read, e.g. %s",
                               pattern, len(others), others[:3])
        else:
            candidates = fs.glob(root) if any(ch in root for ch in "*?[") else [root]
        if not candidates:
            raise FileNotFoundError(f"input {pattern!r} matches no files")
        for path in candidates:
            if _is_remote(fs):
                listed = name = fs.unstrip_protocol(path)
            else:
                listed = os.path.normpath(path)
                name = os.path.relpath(listed, os.path.normpath(base)).replace(os.sep, "/")
            found.setdefault(listed, (fs.size(path), name))
    return [{"path": path, "size": size, "name": name} for path, (size, name) in sorted(found.items())]


def _is_remote(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" not in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)


def detect_format(path: str) -> str | None:
    name = path.lower()
    for suffix, fmt in FORMAT_SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


# ---------------------------------------------------------------------------------------------
# The Ray Data entry point


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
        yield _skipped(path, name, "file", "unknown_format")
        return
    reader = {"warc": _read_warc, "wet": _read_warc, "jsonl": _read_jsonl, "parquet": _read_parquet,
              "text": _read_whole_file, "html": _read_whole_file}[fmt]
    dump = dump_of_path(path) or config.dump
    for row in reader(path, name, config, fmt):
        if row.get("dump") is None:
            row["dump"] = dump
        yield row


COMMON_CRAWL_DUMP = re.compile(r"CC-MAIN-\d{4}-\d{2}(?!\d)")


def dump_of_path(path: str) -> str | None:
    """The Common Crawl dump a path names (``crawl-data/CC-MAIN-2024-10/segments/...``), if any."""
    match = COMMON_CRAWL_DUMP.search(path)
    return match.group(0) if match else None


def _doc_id(name: str, key: str) -> str:
    """Ids hash the file's name for ids (``list_inputs``) and the record's key within the file."""
    return stable_id(name, key)


def _skipped(source: str, name: str, key: str, reason: str, url: str | None = None) -> dict[str, Any]:
    return {"id": _doc_id(name, key), "url": url, "source": source, "drop_reason": f"read:{reason}"}


class TruncatedGzip(Exception):
    """The compressed input ended before its end-of-stream marker."""


class _StrictGzip(io.RawIOBase):
    """Gunzips one or more concatenated gzip members; truncation raises ``TruncatedGzip``.

    Two reasons not to use ``gzip.GzipFile``: it drops the bytes it decoded in the call that hits a
    truncation, and warcio reads its ``EOFError`` as a clean end of the archive, which would lose a
    truncated file's tail without a trace. Here everything decodable is returned first, then the
    truncation is raised as its own exception.
    """

    def __init__(self, compressed: io.BufferedIOBase, chunk_size: int = 1 << 16):
        self.compressed = compressed
        self.chunk_size = chunk_size
        self.decompressor = zlib.decompressobj(wbits=31)
        self.member_started = False
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            data = b""
            if self.decompressor.eof:
                # The member is complete; whatever follows it starts the next one.
                data = self.decompressor.unused_data
                self.decompressor = zlib.decompressobj(wbits=31)
                self.member_started = False
            data = data or self.compressed.read(self.chunk_size)
            if not data:
                if self.member_started:
                    raise TruncatedGzip("compressed input ended inside a gzip member")
                return 0
            self.member_started = True
            self.pending = self.decompressor.decompress(data)
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _open_decompressed(path: str) -> io.BufferedIOBase:
    """Open ``path``, transparently gunzipping it.

    Python's gzip reader decodes concatenated members as one stream, so per-record gzip (the
    WARC norm) and whole-file gzip (Common Crawl's WET files) look the same from here on.
    """
    raw = fsspec.open(path, "rb").open()
    head = raw.read(2)
    raw.seek(0)
    # Unbuffered on purpose: a buffered reader would discard the last good bytes on truncation.
    return _StrictGzip(raw) if head == b"\x1f\x8b" else raw


GZIP_ERRORS = (TruncatedGzip, zlib.error)


def _gzip_reason(error: Exception) -> str:
    return "truncated_gzip" if isinstance(error, TruncatedGzip) else "corrupt_gzip"


# ---------------------------------------------------------------------------------------------
# WARC and WET


class _ResumableStream(io.RawIOBase):
    """A byte stream that first replays ``prefix``, then continues with ``rest``.

    Used to restart WARC parsing at the next record header after a malformed record.
    """

    def __init__(self, prefix: bytes, rest: io.BufferedIOBase):
        self.prefix = prefix
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


WARC_HEADER_START = re.compile(rb"(?:^|\n)WARC/1\.[01]\r?\n|(?:^|\n)WARC/0\.1[78]\r?\n")


def _resync(stream, chunk_size: int = 1 << 16) -> io.BufferedIOBase | None:
    """Skip forward to the next ``WARC/1.x`` line; None when the stream ends first."""
    window = b""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return None
        window = window[-16:] + chunk
        match = WARC_HEADER_START.search(window, 1)
        if match:
            start = match.start() + (1 if window[match.start() : match.start() + 1] == b"\n" else 0)
            return io.BufferedReader(_ResumableStream(window[start:], stream))


def _read_warc(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    wanted = "response" if fmt == "warc" else "conversion"
    try:
        stream: io.BufferedIOBase | None = _open_decompressed(path)
    except (OSError, *GZIP_ERRORS) as error:
        yield _skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    position = 0  # records seen so far: names the error rows stably
    seen_ids: set[str] = set()
    dump = None  # from the file's warcinfo record, which comes first
    while stream is not None:
        records = ArchiveIterator(stream, arc2warc=True, check_digests=False)
        try:
            for record in records:
                position += 1
                if dump is None and record.rec_type == "warcinfo":
                    dump = _warcinfo_dump(record)
                yield {**_warc_record(path, name, record, wanted, config, position, seen_ids), "dump": dump}
            return
        except GZIP_ERRORS as error:
            yield _skipped(path, name, f"error:{position}", _gzip_reason(error))
            return
        except (ArchiveLoadFailed, ValueError):
            # A broken header: count it, then look for the next record instead of losing the file.
            yield _skipped(path, name, f"error:{position}", "malformed_header")
            position += 1
            try:
                # Continue from what the parser had buffered, not from the raw stream it read ahead of.
                stream = _resync(records.reader)
            except GZIP_ERRORS as gzip_error:
                yield _skipped(path, name, f"error:{position}", _gzip_reason(gzip_error))
                return


def _warcinfo_dump(record) -> str | None:
    """The dump a warcinfo record names (Common Crawl writes ``isPartOf: CC-MAIN-2016-50``)."""
    fields = record.content_stream().read(1 << 16).decode("utf-8", "replace")
    match = re.search(r"^isPartOf:\s*(\S+)", fields, re.MULTILINE)
    return match.group(1) if match else None


def _warc_record(
    path: str, name: str, record, wanted: str, config: ReadConfig, position: int, seen_ids: set[str]
) -> dict[str, Any]:
    record_id = record.rec_headers.get_header("WARC-Record-ID") or f"record:{position}"
    url = record.rec_headers.get_header("WARC-Target-URI")
    if record_id in seen_ids:
        # A corrupt file can repeat a record; its id would collide with the first one's.
        return _skipped(path, name, f"{record_id}@{position}", "duplicate_record_id", url)
    seen_ids.add(record_id)
    if record.rec_type != wanted:
        # Requests, metadata and warcinfo records are not documents; they are counted, not kept.
        return _skipped(path, name, record_id, f"record_type:{record.rec_type}", url)
    try:
        payload = record.content_stream().read(config.max_document_bytes + 1)
    except (zlib.error, ValueError) as error:
        if isinstance(error, GZIP_ERRORS):
            raise  # the file itself is broken: the caller counts it once and stops
        # A body whose HTTP transfer/content encoding cannot be undone.
        return _skipped(path, name, record_id, "undecodable", url)
    if len(payload) > config.max_document_bytes:
        return _skipped(path, name, record_id, "too_large", url)
    if wanted == "conversion" and len(payload) < record.length:
        # The file ended inside this record: what we have is a fragment.
        return _skipped(path, name, record_id, "truncated_record", url)
    if not payload.strip():
        return _skipped(path, name, record_id, "empty_payload", url)
    doc = {
        "id": _doc_id(name, record_id),
        "url": url,
        "source": path,
        "fetch_time": record.rec_headers.get_header("WARC-Date"),
    }
    if wanted == "conversion":
        text = _decode(payload, ["utf-8"])
        if text is None:
            return _skipped(path, name, record_id, "undecodable", url)
        return {**doc, "content_type": "text/plain", "text": text}
    content_type = (record.http_headers.get_header("Content-Type") if record.http_headers else None) or ""
    mime = content_type.split(";")[0].strip().lower()
    if mime not in config.html_content_types:
        return _skipped(path, name, record_id, "non_html_content_type", url)
    html = _decode(payload, _charset_candidates(content_type, payload))
    if html is None:
        return _skipped(path, name, record_id, "undecodable", url)
    return {**doc, "content_type": mime, "html": html}


CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


def _charset_candidates(content_type: str, payload: bytes) -> list[str]:
    """HTTP header charset, then the page's meta charset, then a detected one, then UTF-8."""
    candidates = []
    if match := CHARSET_PARAM.search(content_type):
        candidates.append(match.group(1))
    if match := META_CHARSET.search(payload[:4096]):
        candidates.append(match.group(1).decode("ascii", "ignore"))
    candidates += [detect_encoding(payload[:65536]), "utf-8"]
    return candidates


def _decode(payload: bytes, candidates: list[str]) -> str | None:
    """Strictly decode with the first charset that works; None when none does or it is binary."""
    for name in candidates:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            continue
        try:
            text = payload.decode(codec)
        except UnicodeDecodeError:
            continue
        return None if "\x00" in text else text
    return None


# ---------------------------------------------------------------------------------------------
# JSONL, Parquet and plain text


def _read_jsonl(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    try:
        stream = _open_decompressed(path)
    except (OSError, *GZIP_ERRORS) as error:
        yield _skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    line_number = 0
    try:
        for line_number, line in enumerate(_lines(stream), start=1):
            if not line.strip():
                continue
            yield _json_document(path, name, line, line_number, config)
    except GZIP_ERRORS as error:
        yield _skipped(path, name, f"line:{line_number + 1}", _gzip_reason(error))


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
        return _skipped(path, name, key, "too_large")
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return _skipped(path, name, key, "undecodable")
    except json.JSONDecodeError:
        return _skipped(path, name, key, "malformed_record")
    if not isinstance(record, dict):
        return _skipped(path, name, key, "malformed_record")
    return _field_document(path, name, record, key, config)


def _field_document(path: str, name: str, record: dict[str, Any], key: str, config: ReadConfig) -> dict[str, Any]:
    """A JSONL line or Parquet row -> document; an existing id is kept as it is."""
    given_id = record.get(config.id_field)
    doc_id = str(given_id) if given_id not in (None, "") else _doc_id(name, key)
    url = record.get(config.url_field)
    text = record.get(config.text_field)
    if not isinstance(text, str):
        return {**_skipped(path, name, key, "malformed_record", url), "id": doc_id}
    if not text.strip():
        return {**_skipped(path, name, key, "empty_payload", url), "id": doc_id}
    fetch_time = record.get(config.time_field)
    dump = record.get(config.dump_field)
    return {
        "id": doc_id,
        # A dump name, or a Common Crawl path naming one (``crawl-data/CC-MAIN-2020-16/segments/...``).
        "dump": (dump_of_path(dump) or dump) if isinstance(dump, str) and dump else None,
        "url": url if isinstance(url, str) else None,
        "source": path,
        "fetch_time": str(fetch_time) if fetch_time is not None else None,
        "content_type": "text/plain",
        "text": text,
    }


def _read_parquet(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    try:
        parquet = pq.ParquetFile(fsspec.open(path, "rb").open())
    except (OSError, pa.ArrowException) as error:
        yield _skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    if config.text_field not in parquet.schema_arrow.names:
        yield _skipped(path, name, "open", f"missing_column:{config.text_field}")
        return
    fields = (config.text_field, config.id_field, config.url_field, config.time_field, config.dump_field)
    wanted = [c for c in fields if c in parquet.schema_arrow.names]
    row_number = 0
    for batch in parquet.iter_batches(batch_size=config.batch_size, columns=wanted):
        for record in batch.to_pylist():
            row_number += 1
            text = record.get(config.text_field)
            if isinstance(text, str) and len(text.encode()) > config.max_document_bytes:
                yield _skipped(path, name, f"row:{row_number}", "too_large")
                continue
            yield _field_document(path, name, record, f"row:{row_number}", config)


def _read_whole_file(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    """A saved HTML page is one document; a plain-text file is one, or one per paragraph (``text_documents``)."""
    try:
        payload = _open_decompressed(path).read(config.max_document_bytes + 1)
    except (OSError, *GZIP_ERRORS) as error:
        yield _skipped(path, name, "file", f"unreadable_file:{type(error).__name__}")
        return
    if len(payload) > config.max_document_bytes:
        yield _skipped(path, name, "file", "too_large")
        return
    text = _decode(payload, _charset_candidates("", payload) if fmt == "html" else ["utf-8"])
    if text is None:
        yield _skipped(path, name, "file", "undecodable")
    elif not text.strip():
        yield _skipped(path, name, "file", "empty_payload")
    elif fmt == "html":
        yield {"id": _doc_id(name, "file"), "source": path, "content_type": "text/html", "html": text}
    elif config.text_documents == "file":
        yield {"id": _doc_id(name, "file"), "source": path, "content_type": "text/plain", "text": text}
    else:
        # Blank runs between paragraphs are separators, not content: they are the only text left out.
        for number, paragraph in enumerate(p for p in text.split("\n\n") if p.strip()):
            key = f"paragraph:{number}"
            yield {"id": _doc_id(name, key), "source": path, "content_type": "text/plain", "text": paragraph}

