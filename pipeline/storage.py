"""Paths and files on any fsspec store: a local disk, a mounted volume, S3, GCS.

The bottom layer: the pipeline, the model and the jobs all read and write through these helpers,
so a path is handled the same way wherever it points.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import uuid

import fsspec

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://..., file:///..., models:/name/1, runs:/id/...


def absolute(path: str) -> str:
    """A local path made absolute (Ray workers do not share the driver's working directory); a URI
    (``s3://``, ``gs://``, an MLflow ``models:/`` or ``runs:/``) as given."""
    return path if _URI.match(path) else os.path.abspath(path)


def filesystem(path: str) -> fsspec.AbstractFileSystem:
    return fsspec.core.url_to_fs(path)[0]


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols


def join(folder: str, relative: str) -> str:
    """``relative`` (which may climb out with ``..``) below ``folder``, normalized: object stores
    take keys literally, so ``s3://b/data/v2/../v1/x`` must become ``s3://b/data/v1/x`` here."""
    scheme, separator, path = folder.rpartition("://")
    return f"{scheme}{separator}{posixpath.normpath(posixpath.join(path, relative))}"


def relative_to(path: str, folder: str) -> str:
    """The inverse of ``join``: ``path`` as seen from ``folder`` (``..`` where it lies beside it)."""
    return posixpath.relpath(path.partition("://")[2] or path, folder.partition("://")[2] or folder)


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` on any filesystem, creating its folder; return its sha256."""
    fs = filesystem(path)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def replace_atomically(path: str, data: bytes) -> None:
    """Write a small object so that readers see the old one or the new one, never a part of either."""
    fs = filesystem(path)
    if is_local(fs):
        # Write beside it, then rename over it: POSIX rename replaces the old file atomically.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    else:
        # An object store replaces a whole object per PUT.
        fs.pipe_file(path, data)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with filesystem(path).open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
