"""Compressed inputs: gunzip that reports a truncated file instead of ending quietly."""

from __future__ import annotations

import io
import zlib

import fsspec


class TruncatedGzip(Exception):
    """The compressed input ended before its end-of-stream marker."""


class StrictGzip(io.RawIOBase):
    """Gunzips one or more concatenated gzip members; truncation raises ``TruncatedGzip``.

    Why not ``gzip.GzipFile`` or FastWARC's own gzip reader: the first drops the bytes it decoded in
    the call that hits a truncation, the second ends a truncated file as if it were complete; both
    would lose a truncated file's tail without a trace. Here everything decodable is returned
    first, then the truncation is raised as its own exception. ``tell`` is there for FastWARC,
    which asks a stream for its position before it reads.
    """

    def __init__(self, compressed: io.BufferedIOBase, chunk_size: int = 1 << 16):
        self.compressed = compressed
        self.chunk_size = chunk_size
        self.decompressor = zlib.decompressobj(wbits=31)
        self.member_started = False
        self.pending = b""
        self.position = 0  # decompressed bytes returned so far

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

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
        self.position += n
        return n


def open_decompressed(path: str) -> io.BufferedIOBase:
    """Open ``path``, transparently gunzipping it.

    Python's gzip reader decodes concatenated members as one stream, so per-record gzip (the
    WARC norm) and whole-file gzip (Common Crawl's WET files) look the same from here on.
    """
    raw = fsspec.open(path, "rb").open()
    head = raw.read(2)
    raw.seek(0)
    # Unbuffered on purpose: a buffered reader would discard the last good bytes on truncation.
    return StrictGzip(raw) if head == b"\x1f\x8b" else raw


GZIP_ERRORS = (TruncatedGzip, zlib.error)


def gzip_reason(error: Exception) -> str:
    return "truncated_gzip" if isinstance(error, TruncatedGzip) else "corrupt_gzip"
