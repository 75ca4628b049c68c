"""Which version of a dataset is current, and what the next one is called.

A dataset root holds its versions side by side and one small file naming the current one:

    <root>/CURRENT      "v2\\n": the version readers and the next rebuild start from
    <root>/v1/          complete versions (``manifest.json`` inside, see ``shards.py``)
    <root>/v2/

``CURRENT`` moves only after the version it names is committed, and it is replaced in one step
(a rename on a local disk, a single PUT on an object store), so a reader never sees it half
written and a crash at any point leaves it naming a complete version.
"""

from __future__ import annotations

import os
import re
import uuid

from pipeline.shards import VersionPaths, filesystem, is_complete

CURRENT = "CURRENT"

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


class VersionError(RuntimeError):
    """The dataset root is not in a state a rebuild can safely start from."""


def current_path(root: str) -> str:
    return f"{root.rstrip('/')}/{CURRENT}"


def read_current(root: str) -> str | None:
    """The version ``CURRENT`` names, or None when the root has none; it must be complete."""
    path = current_path(root)
    fs = filesystem(path)
    if not fs.exists(path):
        return None
    version = fs.cat_file(path).decode().strip()
    if not is_complete(VersionPaths(root, version)):
        raise VersionError(f"{path} names {version!r}, which is not a complete version under {root}")
    return version


def set_current(root: str, version: str) -> None:
    """Point ``CURRENT`` at a committed version, replacing the old pointer in one step."""
    if not is_complete(VersionPaths(root, version)):
        raise VersionError(f"cannot make {version!r} current: {root}/{version} is not complete")
    path = current_path(root)
    fs = filesystem(path)
    data = f"{version}\n".encode()
    if _is_local(fs):
        # Write beside it, then rename over it: POSIX rename replaces the old file atomically.
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    else:
        # An object store replaces a whole object per PUT: readers see the old one or the new one.
        fs.pipe_file(path, data)


def next_version(version: str) -> str:
    """``v1`` -> ``v2``, ``2024-v09`` -> ``2024-v10``: the trailing number counts up, width kept."""
    match = _TRAILING_NUMBER.match(version)
    if match is None:
        raise ValueError(f"version {version!r} does not end in a number, so no next version follows it")
    prefix, number = match.groups()
    return f"{prefix}{int(number) + 1:0{len(number)}d}"


def _is_local(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols
