"""Listing inputs: paths, globs, folders and URLs -> the files to read, with the name their ids hash."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import fsspec

from pipeline.storage import is_local

logger = logging.getLogger(__name__)

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
            if not is_local(fs):
                listed = name = fs.unstrip_protocol(path)
            else:
                listed = os.path.normpath(path)
                name = os.path.relpath(listed, os.path.normpath(base)).replace(os.sep, "/")
            found.setdefault(listed, (fs.size(path), name))
    return [{"path": path, "size": size, "name": name} for path, (size, name) in sorted(found.items())]


def detect_format(path: str) -> str | None:
    name = path.lower()
    for suffix, fmt in FORMAT_SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None
