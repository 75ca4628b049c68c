"""What every reader emits for a record: a stable id, the crawl dump, and a counted skip when the
record is no document."""

from __future__ import annotations

import re
from typing import Any

from pipeline.documents import stable_id


def doc_id(name: str, key: str) -> str:
    """Ids hash the file's name for ids (``list_inputs``) and the record's key within the file."""
    return stable_id(name, key)


def skipped(source: str, name: str, key: str, reason: str, url: str | None = None) -> dict[str, Any]:
    return {"id": doc_id(name, key), "url": url, "source": source, "drop_reason": f"read:{reason}"}


COMMON_CRAWL_DUMP = re.compile(r"CC-MAIN-\d{4}-\d{2}(?!\d)")


def dump_of_path(path: str) -> str | None:
    """The Common Crawl dump a path names (``crawl-data/CC-MAIN-2024-10/segments/...``), if any."""
    match = COMMON_CRAWL_DUMP.search(path)
    return match.group(0) if match else None
