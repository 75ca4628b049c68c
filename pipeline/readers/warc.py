"""WARC (response records) and WET (conversion records) -> rows; a broken header is counted and skipped."""

from __future__ import annotations

import io
import re
import zlib
from typing import Any, Iterator

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from pipeline.readers.charset import charset_candidates, decode
from pipeline.readers.config import ReadConfig
from pipeline.readers.rows import doc_id, skipped
from pipeline.readers.streams import GZIP_ERRORS, gzip_reason, open_decompressed


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


def read_warc(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    wanted = "response" if fmt == "warc" else "conversion"
    try:
        stream: io.BufferedIOBase | None = open_decompressed(path)
    except (OSError, *GZIP_ERRORS) as error:
        yield skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
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
            yield skipped(path, name, f"error:{position}", gzip_reason(error))
            return
        except (ArchiveLoadFailed, ValueError):
            # A broken header: count it, then look for the next record instead of losing the file.
            yield skipped(path, name, f"error:{position}", "malformed_header")
            position += 1
            try:
                # Continue from what the parser had buffered, not from the raw stream it read ahead of.
                stream = _resync(records.reader)
            except GZIP_ERRORS as gzip_error:
                yield skipped(path, name, f"error:{position}", gzip_reason(gzip_error))
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
        return skipped(path, name, f"{record_id}@{position}", "duplicate_record_id", url)
    seen_ids.add(record_id)
    if record.rec_type != wanted:
        # Requests, metadata and warcinfo records are not documents; they are counted, not kept.
        return skipped(path, name, record_id, f"record_type:{record.rec_type}", url)
    try:
        payload = record.content_stream().read(config.max_document_bytes + 1)
    except (zlib.error, ValueError) as error:
        if isinstance(error, GZIP_ERRORS):
            raise  # the file itself is broken: the caller counts it once and stops
        # A body whose HTTP transfer/content encoding cannot be undone.
        return skipped(path, name, record_id, "undecodable", url)
    if len(payload) > config.max_document_bytes:
        return skipped(path, name, record_id, "too_large", url)
    if wanted == "conversion" and len(payload) < record.length:
        # The file ended inside this record: what we have is a fragment.
        return skipped(path, name, record_id, "truncated_record", url)
    if not payload.strip():
        return skipped(path, name, record_id, "empty_payload", url)
    doc = {
        "id": doc_id(name, record_id),
        "url": url,
        "source": path,
        "fetch_time": record.rec_headers.get_header("WARC-Date"),
    }
    if wanted == "conversion":
        text = decode(payload, ["utf-8"])
        if text is None:
            return skipped(path, name, record_id, "undecodable", url)
        return {**doc, "content_type": "text/plain", "text": text}
    content_type = (record.http_headers.get_header("Content-Type") if record.http_headers else None) or ""
    mime = content_type.split(";")[0].strip().lower()
    if mime not in config.html_content_types:
        return skipped(path, name, record_id, "non_html_content_type", url)
    html = decode(payload, charset_candidates(content_type, payload))
    if html is None:
        return skipped(path, name, record_id, "undecodable", url)
    return {**doc, "content_type": mime, "html": html}
