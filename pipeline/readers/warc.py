"""WARC (response records) and WET (conversion records) -> rows, parsed by FastWARC.

FastWARC parses strictly: a broken WARC header, or bytes that are no record, raise instead of being
skipped quietly. Each is counted as a ``malformed_header`` row, and reading resumes at the next
``WARC/1.x`` line after it, so one bad record never costs the rest of the file.
"""

from __future__ import annotations

import copy
import io
import re
from typing import Any, Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from pipeline.readers.charset import charset_candidates, decode
from pipeline.readers.config import ReadConfig
from pipeline.readers.rows import doc_id, skipped
from pipeline.readers.streams import GZIP_ERRORS, gzip_reason, open_decompressed

WARC_HEADER_START = re.compile(rb"(?:^|\n)WARC/(?:1\.[01]|0\.1[78])\r?\n")
END_OF_WARC_HEADERS = b"\r\n\r\n"  # strict parsing only accepts CRLF line ends in WARC headers
MAX_HTTP_HEADER_BYTES = 32 << 10  # FastWARC's own limit


class MalformedRecord(Exception):
    """A record FastWARC parsed, but not as a WARC record."""


class _ReplayedStream(io.RawIOBase):
    """A byte stream that first replays ``prefix``, then continues with ``rest``."""

    def __init__(self, prefix: bytes, rest: io.RawIOBase):
        self.prefix = prefix
        self.rest = rest
        self.position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
        else:
            data = self.rest.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.position += n
        return n


def _resume_after(path: str, offset: int, last_record: tuple[int, int] | None, chunk_size: int = 1 << 16):
    """Reopen ``path`` at the first record header after the unparsable bytes that follow ``last_record``.

    ``last_record`` is the (offset, content length) of the last record parsed, None when none was.
    Returns (offset of that header, a stream starting there), or None when no header follows.
    Reopening rereads the file up to there; broken headers are rare enough for that to be cheap.
    """
    stream = open_decompressed(path)
    consumed = 0
    window = b""

    def more() -> bool:
        nonlocal window
        chunk = stream.read(chunk_size)
        window += chunk
        return bool(chunk)

    skip_to = offset if last_record is None else last_record[0]
    while consumed + len(window) < skip_to and more():
        pass
    window = window[skip_to - consumed :]
    consumed = skip_to
    if last_record is not None:
        # The last good record ends after its headers' blank line and its content.
        while (end := window.find(END_OF_WARC_HEADERS)) < 0 and more():
            pass
        record_end = end + len(END_OF_WARC_HEADERS) + last_record[1]
        while len(window) < record_end + 1 and more():
            pass
        window = window[record_end:]
        consumed += record_end
    # The unparsable bytes start at the first non-blank byte; the next header line starts after it.
    while not window.strip() and more():
        pass
    junk = len(window) - len(window.lstrip())
    while True:
        match = WARC_HEADER_START.search(window, junk + 1)
        if match:
            start = match.start() + (window[match.start() : match.start() + 1] == b"\n")
            return consumed + start, _ReplayedStream(window[start:], stream)
        # Keep an overlap: a header line may straddle two chunks. A match at the kept part's first
        # byte would have been found in this window already, hence searching from 1 next time.
        keep = max(len(window) - 16, junk + 1)
        consumed += keep
        window, junk = window[keep:], 0
        if not more():
            return None


def read_warc(path: str, name: str, config: ReadConfig, fmt: str) -> Iterator[dict[str, Any]]:
    wanted = WarcRecordType.response if fmt == "warc" else WarcRecordType.conversion
    try:
        stream: io.RawIOBase | None = open_decompressed(path)
    except (OSError, *GZIP_ERRORS) as error:
        yield skipped(path, name, "open", f"unreadable_file:{type(error).__name__}")
        return
    offset = 0  # where ``stream`` starts in the decompressed file
    position = 0  # records seen so far: names the error rows stably
    seen_ids: set[str] = set()
    dump = None  # from the file's warcinfo record, which comes first
    while stream is not None:
        last_record = None
        try:
            # The stream is decompressed already, by a reader that reports truncation.
            for record in ArchiveIterator(stream, parse_http=False, stream_detect=False):
                if any("\n" in value for value in record.headers.values()):
                    # LF-only header lines, which strict parsing reads as one long header.
                    raise MalformedRecord
                position += 1
                last_record = (offset + record.stream_pos, record.content_length)
                if dump is None and record.record_type == WarcRecordType.warcinfo:
                    dump = _warcinfo_dump(record)
                yield {**_warc_record(path, name, record, wanted, config, position, seen_ids), "dump": dump}
            return
        except GZIP_ERRORS as error:
            yield skipped(path, name, f"error:{position}", gzip_reason(error))
            return
        except (OSError, MalformedRecord):
            # A broken header: count it, then look for the next record instead of losing the file.
            yield skipped(path, name, f"error:{position}", "malformed_header")
            position += 1
            try:
                resumed = _resume_after(path, offset, last_record)
            except GZIP_ERRORS as gzip_error:
                yield skipped(path, name, f"error:{position}", gzip_reason(gzip_error))
                return
            except OSError as error:
                yield skipped(path, name, f"error:{position}", f"unreadable_file:{type(error).__name__}")
                return
            offset, stream = resumed if resumed else (0, None)


def _warcinfo_dump(record: WarcRecord) -> str | None:
    """The dump a warcinfo record names (Common Crawl writes ``isPartOf: CC-MAIN-2016-50``)."""
    fields = record.reader.read(1 << 16).decode("utf-8", "replace")
    match = re.search(r"^isPartOf:\s*(\S+)", fields, re.MULTILINE)
    return match.group(1) if match else None


def _http_response(record: WarcRecord, limit: int) -> tuple[str, bytes]:
    """The HTTP content type, and the body with its transfer and content encodings undone (at most
    ``limit`` bytes).

    A body whose encoding cannot be undone is read as stored, as warcio does: ClueWeb09, for one,
    stores decoded bodies under their original ``Content-Encoding: gzip`` header. Whether the
    stored bytes are text is then the charset decoder's call.
    """
    # Frozen into memory (its size was checked), so that each try parses a copy of its own: a failed
    # decoding leaves the record it ran on unusable, and the archive iterator still needs the original.
    record.freeze()
    for auto_decode in ("all", "none"):
        response = copy.copy(record)
        try:
            # LF-only HTTP header lines are common in old crawls (ClueWeb09): parse them leniently.
            response.parse_http(auto_decode=auto_decode, max_header_len=MAX_HTTP_HEADER_BYTES, quirks_mode=True,
                                strict_mode=False)
            body = response.reader.read(limit)
            break
        except OSError:
            if auto_decode == "none":
                raise
    return response.http_headers.get("Content-Type") or "", body


def _warc_record(
    path: str, name: str, record: WarcRecord, wanted: WarcRecordType, config: ReadConfig, position: int,
    seen_ids: set[str],
) -> dict[str, Any]:
    headers = record.headers
    record_id = headers.get("WARC-Record-ID") or f"record:{position}"
    # WARC 1.1 drafts wrote the URI in angle brackets, as some crawlers (wget) still do.
    url = (headers.get("WARC-Target-URI") or "").strip("<>") or None
    if record_id in seen_ids:
        # A corrupt file can repeat a record; its id would collide with the first one's.
        return skipped(path, name, f"{record_id}@{position}", "duplicate_record_id", url)
    seen_ids.add(record_id)
    if record.record_type != wanted:
        # Requests, metadata and warcinfo records are not documents; they are counted, not kept.
        return skipped(path, name, record_id, f"record_type:{headers.get('WARC-Type')}", url)
    if record.content_length > config.max_document_bytes + MAX_HTTP_HEADER_BYTES:
        # Not read into memory: its body, as stored, is over the limit already.
        return skipped(path, name, record_id, "too_large", url)
    limit = config.max_document_bytes + 1
    content_type = ""
    try:
        if record.is_http:
            content_type, payload = _http_response(record, limit)
        else:
            payload = record.reader.read(limit)
    except OSError:
        return skipped(path, name, record_id, "malformed_http_header", url)
    if len(payload) > config.max_document_bytes:
        return skipped(path, name, record_id, "too_large", url)
    if wanted == WarcRecordType.conversion and len(payload) < record.content_length:
        # The file ended inside this record: what we have is a fragment.
        return skipped(path, name, record_id, "truncated_record", url)
    if not payload.strip():
        return skipped(path, name, record_id, "empty_payload", url)
    doc = {"id": doc_id(name, record_id), "url": url, "source": path, "fetch_time": headers.get("WARC-Date")}
    if wanted == WarcRecordType.conversion:
        text = decode(payload, ["utf-8"])
        if text is None:
            return skipped(path, name, record_id, "undecodable", url)
        return {**doc, "content_type": "text/plain", "text": text}
    mime = content_type.split(";")[0].strip().lower()
    if mime not in config.html_content_types:
        return skipped(path, name, record_id, "non_html_content_type", url)
    html = decode(payload, charset_candidates(content_type, payload))
    if html is None:
        return skipped(path, name, record_id, "undecodable", url)
    return {**doc, "content_type": mime, "html": html}
