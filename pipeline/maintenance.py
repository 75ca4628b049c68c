"""Upkeep of a dataset root between builds: garbage collection and dedup index compaction.

Both run under the dataset's lease (``lease.py``), so no build or rebuild writes meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.build import tokens_root
from pipeline.build_config import BuildConfig, Plan
from pipeline.dedup import INDEX_FOLDER
from pipeline.dedup.index import compact_index
from pipeline.lease import LEASE_FILES
from pipeline.storage import absolute
from pipeline.versions import (
    Build,
    VersionError,
    VersionPaths,
    collect_garbage,
    publish,
    read_current,
    read_manifest,
    version_file,
)


@dataclass
class Garbage:
    text: list[str]
    tokens: list[str]


def collect_dataset_garbage(config: BuildConfig, min_age_seconds: float) -> Garbage:
    """Remove what no manifest lists, in the text root and, if the config makes them, its token root."""
    text = collect_garbage(absolute(config.output), keep=LEASE_FILES, min_age_seconds=min_age_seconds)
    tokens = collect_garbage(tokens_root(config), min_age_seconds=min_age_seconds) if config.tokenize else []
    return Garbage(text, tokens)


def compact_current_index(config: BuildConfig) -> dict | None:
    """Merge the current version's dedup index parts into one part, and publish the version again
    with it (the same documents, one index file set instead of one per rebuild). The old parts stay
    listed by the versions that use them, or become garbage. None when there is nothing to merge."""
    root = absolute(config.output)
    current = read_current(root)
    if current is None:
        raise VersionError(f"{root} has no current version to compact")
    paths = VersionPaths(root, current)
    manifest = read_manifest(paths.final)
    parts = manifest["dedup_index"]["parts"]
    if len(parts) < 2:
        return None
    build = Build.start(paths)
    part = f"{build.name}/{INDEX_FOLDER}"
    written = compact_index([version_file(paths.final, p) for p in parts], version_file(paths.final, part),
                            Plan(config).dedup_config)
    kept = [f for f in manifest["files"] if not any(f["path"].startswith(f"{p}/") for p in parts)]
    manifest["dedup_index"] = {"parts": [part], "part_rows": [written["rows"]], "rows": written["rows"]}
    return publish(build, {k: v for k, v in manifest.items() if k not in ("build", "files")}, inherited=kept)
