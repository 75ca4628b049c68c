"""Bytes -> text: the HTTP header's charset, the page's meta charset, a detected one, then UTF-8."""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import detect_encoding

CHARSET_PARAM = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


def charset_candidates(content_type: str, payload: bytes) -> list[str]:
    """HTTP header charset, then the page's meta charset, then a detected one, then UTF-8."""
    candidates = []
    if match := CHARSET_PARAM.search(content_type):
        candidates.append(match.group(1))
    if match := META_CHARSET.search(payload[:4096]):
        candidates.append(match.group(1).decode("ascii", "ignore"))
    candidates += [detect_encoding(payload[:65536]), "utf-8"]
    return candidates


def decode(payload: bytes, candidates: list[str]) -> str | None:
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
