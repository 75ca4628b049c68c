"""Dataset versions on any fsspec store: immutable files, a manifest that lists them, a pointer.

    <root>/CURRENT                          "v2\\n": the version readers and the next rebuild start from
    <root>/v1/manifest.json                 every file v1 uses: path (from v1/), size and sha256
    <root>/v1/build-20261206T101500Z-3f9a1c/  the files one build wrote, never changed afterwards
    <root>/v2/manifest.json                 may list v1's files too (``../v1/build-.../...``)
    <root>/v2/build-20261207T101500Z-77b0e2/

Publishing never moves, copies or deletes a file. A build writes new files into a build folder
of its own, then the manifest (one atomic write), then ``CURRENT`` (one atomic write). A version
is complete if and only if its manifest exists and every file it lists is there at the listed
size: that is checked whenever a version is opened or adopted. A build killed at any point leaves
only files that no manifest lists; ``collect_garbage`` removes them. Rebuilding a complete
version (``--overwrite``) writes a new build folder beside the old one and replaces the manifest:
readers that opened the old one keep reading its files, which stay until the next garbage
collection.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline.storage import filesystem, is_local, join, relative_to, replace_atomically, sha256_of

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUILD_PREFIX = "build-"
_BUILD_TIME = "%Y%m%dT%H%M%SZ"
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


class VersionError(RuntimeError):
    """The dataset root is not in a state a build or rebuild can safely start from."""


@dataclass(frozen=True)
class VersionPaths:
    root: str
    version: str

    @classmethod
    def of(cls, version_dir: str) -> VersionPaths:
        root, _, version = version_dir.rstrip("/").rpartition("/")
        return cls(root or ".", version)

    @property
    def final(self) -> str:
        return f"{self.root.rstrip('/')}/{self.version}"

    @property
    def manifest(self) -> str:
        return f"{self.final}/{MANIFEST}"


@dataclass(frozen=True)
class Build:
    """One attempt at a version: a folder of new files that only its manifest will make visible."""

    paths: VersionPaths
    name: str

    @classmethod
    def start(cls, paths: VersionPaths) -> Build:
        stamp = datetime.now(timezone.utc).strftime(_BUILD_TIME)
        return cls(paths, f"{BUILD_PREFIX}{stamp}-{uuid.uuid4().hex[:6]}")

    @property
    def folder(self) -> str:
        return f"{self.paths.final}/{self.name}"


def read_manifest(version_dir: str) -> dict[str, Any]:
    path = f"{version_dir.rstrip('/')}/{MANIFEST}"
    return json.loads(filesystem(path).cat_file(path))


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def publish(
    build: Build,
    manifest: dict[str, Any],
    hashes: dict[str, str] | None = None,
    inherited: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """List every file of ``build`` (with ``inherited``: files of other versions this one uses, paths
    from its own folder) in the manifest, write it, and return it. ``hashes``: the sha256 of files
    whose writers computed it, by path from the version folder; the others are read back once."""
    fs = filesystem(build.folder)
    version_dir = build.paths.final
    own = []
    if fs.exists(build.folder):
        for path, info in sorted(_listing(fs, build.folder).items()):
            relative = relative_to(path, fs._strip_protocol(version_dir))
            digest = (hashes or {}).get(relative) or sha256_of(join(version_dir, relative))
            own.append({"path": relative, "size": info["size"], "sha256": digest})
    manifest = {**manifest, "build": build.name, "files": sorted([*(inherited or []), *own], key=lambda f: f["path"])}
    replace_atomically(build.paths.manifest, manifest_json(manifest).encode())
    return manifest


def missing_files(paths: VersionPaths) -> list[str] | None:
    """What keeps a version from being complete: None when it has no manifest, else the listed
    files that are absent or of another size (empty: complete)."""
    fs = filesystem(paths.manifest)
    if not fs.exists(paths.manifest):
        return None
    files = read_manifest(paths.final).get("files")
    if files is None:
        return [MANIFEST]  # a manifest that lists no files is not one this module wrote
    root = fs._strip_protocol(paths.root).rstrip("/")
    sizes = {path: info["size"] for path, info in _listing(fs, root).items()} if files else {}
    base = fs._strip_protocol(paths.final)
    return [f["path"] for f in files if sizes.get(join(base, f["path"])) != f["size"]]


def is_complete(paths: VersionPaths) -> bool:
    return missing_files(paths) == []


def open_version(version_dir: str) -> dict[str, Any]:
    """The manifest of a complete version; FileNotFoundError naming what is missing otherwise."""
    missing = missing_files(VersionPaths.of(version_dir))
    if missing is None:
        raise FileNotFoundError(f"{version_dir}: no {MANIFEST}, so not a published version")
    if missing:
        raise FileNotFoundError(f"{version_dir}: incomplete, {len(missing)} listed files are missing or cut short: {missing[:3]}")
    return read_manifest(version_dir)


def version_file(version_dir: str, relative: str) -> str:
    """A file a manifest lists, as a path (its own build's, or another version's)."""
    return join(version_dir.rstrip("/"), relative)


def rebase(relative: str, from_dir: str, to_dir: str) -> str:
    """A path one version's manifest lists -> the same file's path as another version lists it
    (``build-x/shards/a.parquet`` in ``v1`` is ``../v1/build-x/shards/a.parquet`` from ``v2``)."""
    return relative_to(version_file(from_dir, relative), to_dir)


# ---------------------------------------------------------------------------------------------
# The current version


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
    """Point ``CURRENT`` at a complete version, replacing the old pointer in one step."""
    if not is_complete(VersionPaths(root, version)):
        raise VersionError(f"cannot make {version!r} current: {root}/{version} is not complete")
    replace_atomically(current_path(root), f"{version}\n".encode())


def next_version(version: str) -> str:
    """``v1`` -> ``v2``, ``2024-v09`` -> ``2024-v10``: the trailing number counts up, width kept."""
    match = _TRAILING_NUMBER.match(version)
    if match is None:
        raise ValueError(f"version {version!r} does not end in a number, so no next version follows it")
    prefix, number = match.groups()
    return f"{prefix}{int(number) + 1:0{len(number)}d}"


# ---------------------------------------------------------------------------------------------
# Garbage collection


def collect_garbage(root: str, keep: tuple[str, ...] = (), min_age_seconds: float = 24 * 3600) -> list[str]:
    """Remove every file under ``root`` that no version's manifest lists: what killed builds and
    replaced versions left behind. Manifests, ``CURRENT`` and ``keep`` (names directly under the
    root, such as a lease) stay, and so do build folders younger than ``min_age_seconds``: a build
    may be writing them now. Returns the removed paths."""
    fs = filesystem(root)
    base = fs._strip_protocol(root).rstrip("/")
    if not fs.exists(base):
        return []
    listed = set()
    for manifest_path in fs.glob(f"{base}/*/{MANIFEST}"):
        version_dir = manifest_path.rsplit("/", 1)[0]
        listed.update(join(version_dir, f["path"]) for f in json.loads(fs.cat_file(manifest_path)).get("files", []))
    spared = {f"{base}/{name}" for name in (CURRENT, *keep)}
    garbage = [
        path for path in sorted(_listing(fs, base))
        if path not in listed and path not in spared and not path.endswith(f"/{MANIFEST}")
        and not _recent_build(path[len(base) + 1 :], min_age_seconds)
    ]
    if garbage:
        fs.rm(garbage)
    if is_local(fs):  # folders are real there: drop those the removals emptied
        for folder, subfolders, files in os.walk(base, topdown=False):
            if folder != base and not subfolders and not files:
                os.rmdir(folder)
    return garbage


def _listing(fs, folder: str) -> dict[str, dict[str, Any]]:
    """Every file below ``folder`` with its details, as the store has them now (s3fs caches listings)."""
    fs.invalidate_cache(folder)
    return fs.find(folder, detail=True)


def _recent_build(relative: str, min_age_seconds: float) -> bool:
    """Whether ``relative`` (``<version>/build-<time>-<id>/...``) lies in a build folder that is
    younger than ``min_age_seconds``."""
    parts = relative.split("/")
    if len(parts) < 3 or not parts[1].startswith(BUILD_PREFIX):
        return False
    try:
        started = datetime.strptime(parts[1][len(BUILD_PREFIX) :].split("-")[0], _BUILD_TIME)
    except ValueError:
        return False
    return time.time() - started.replace(tzinfo=timezone.utc).timestamp() < min_age_seconds
