"""Incremental rebuilds: a new dataset version from the inputs that landed since the current one.

    list the config's inputs --compare with the current version's manifest--> new files (none: stop)
    build the new files alone, deduplicated against the current version's dedup index
        -> <root>/.increments/<parent>/<version>/      scratch; reused if a crash comes later
    assemble <root>/.<version>.inprogress/: the parent's shards as they are, the increment's
        shards beside them (renamed ``<version>-part-...``), the increment's dedup index (it
        covers both), and a manifest that names the parent
    commit it as <root>/<version>/, then move CURRENT to it (``versions.py``)

Nothing of the parent version is ever written and CURRENT moves last, so a run killed at any point
leaves the parent current and intact. The next run resumes: a complete increment whose inputs are
still the new ones is reused, and a committed version that CURRENT never reached is adopted.
With no current version yet, the first run is an ordinary full build of ``dataset.version``.

Runs must not overlap (two would build the same next version): schedule them further apart than
one run takes, and bound a run's time (``activeDeadlineSeconds`` on Kubernetes, ``flock`` in cron).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

from pipeline import tracking
from pipeline.build import BuildConfig, Plan, build
from pipeline.config import ConfigError, to_dict
from pipeline.dedup import INDEX_FOLDER
from pipeline.readers import list_inputs
from pipeline.report import log_build, stage_metrics
from pipeline.shards import (
    MANIFEST,
    VersionPaths,
    absolute,
    commit,
    filesystem,
    is_complete,
    prepare_staging,
    read_manifest,
)
from pipeline.versions import VersionError, next_version, read_current, set_current

logger = logging.getLogger(__name__)

INCREMENTS = ".increments"
# The build settings every version of one dataset shares: a version mixing two would be neither.
SHARED_SETTINGS = ("read", "stages", "shards")


@dataclass
class RebuildResult:
    """``first``: the first version, a full build. ``increment``: a new version on top of ``parent``.
    ``unchanged``: no new input; nothing was written and ``version`` is the current one."""

    outcome: Literal["first", "increment", "unchanged"]
    version: str
    parent: str | None
    manifest: dict[str, Any]
    seconds: dict[str, float]


def rebuild(config: BuildConfig) -> RebuildResult:
    # Absolute, as the build makes it: Ray workers do not share the driver's working directory.
    config = dataclasses.replace(config, output=absolute(config.output))
    root = config.output
    _check_rebuildable(config)
    current = starting_version(config)
    if current is None:
        result = build(config)
        _advance(root, config.dataset.version)
        return RebuildResult("first", config.dataset.version, None, dict(result), result.seconds)

    parent_manifest = read_manifest(VersionPaths(root, current).final)
    _check_same_settings(config, parent_manifest, current)
    new = new_inputs(list_inputs(config.inputs), parent_manifest["inputs"], current)
    if not new:
        return RebuildResult("unchanged", current, None, parent_manifest, {})

    version = next_version(current)
    increment_dir, increment, seconds = build_increment(config, current, version, new)
    manifest = assemble(config, current, parent_manifest, version, increment_dir, increment)
    _advance(root, version)
    return RebuildResult("increment", version, current, manifest, seconds)


def starting_version(config: BuildConfig) -> str | None:
    """The version to build on: CURRENT, or a complete ``dataset.version`` built without one.

    A run that committed its version but died before moving CURRENT left a complete successor
    naming the current version as its parent: that version is adopted instead of built again.
    """
    root = config.output
    current = read_current(root)
    if current is None:
        if not is_complete(VersionPaths(root, config.dataset.version)):
            return None
        current = config.dataset.version
        _advance(root, current)
    while is_complete(successor := VersionPaths(root, next_version(current))):
        if read_manifest(successor.final).get("parent", {}).get("version") != current:
            raise VersionError(
                f"{successor.final} exists but is not a rebuild of {current}: move it away or point "
                f"{root}/CURRENT at the version to build on"
            )
        current = successor.version
        _advance(root, current)
    return current


def new_inputs(listed: list[dict[str, Any]], ingested: list[dict[str, Any]], parent: str) -> list[dict[str, Any]]:
    """The listed files the parent has not ingested. Ingested files must not have changed, and a new
    file may not share an ingested file's name for ids (its path below the input root; a file's
    base name in manifests older than those names): it could repeat their ids (``readers.py``)."""
    sizes = {item["path"]: item["size"] for item in ingested}
    changed = [item["path"] for item in listed if item["path"] in sizes and sizes[item["path"]] != item["size"]]
    if changed:
        raise VersionError(f"inputs already in {parent} changed size since: {', '.join(changed)}")
    new = [item for item in listed if item["path"] not in sizes]
    names = {_id_name(item) for item in ingested}
    clashing = [item["path"] for item in new if _id_name(item) in names]
    if clashing:
        raise VersionError(
            f"new inputs are named like inputs already in {parent} (document ids derive from a file's path "
            f"below the input root, so theirs could repeat): {', '.join(clashing)}"
        )
    return new


def build_increment(
    config: BuildConfig, parent: str, version: str, new: list[dict[str, Any]]
) -> tuple[str, dict[str, Any], dict[str, float]]:
    """Build the new inputs alone, deduplicated against the parent's index; returns the increment's
    folder, manifest and timings. A complete increment of exactly these inputs is reused."""
    scratch = f"{config.output.rstrip('/')}/{INCREMENTS}/{parent}"
    paths = VersionPaths(scratch, version)
    increment_config = dataclasses.replace(
        config,
        dataset=dataclasses.replace(config.dataset, version=version),
        inputs=[item["path"] for item in new],
        output=scratch,
    )
    reusable = is_complete(paths) and read_manifest(paths.final)["inputs"] == new
    previous_index = f"{VersionPaths(config.output, parent).final}/{INDEX_FOLDER}"
    result = build(increment_config, overwrite=not reusable, previous_index=previous_index)
    return paths.final, dict(result), result.seconds


def assemble(
    config: BuildConfig,
    parent: str,
    parent_manifest: dict[str, Any],
    version: str,
    increment_dir: str,
    increment: dict[str, Any],
) -> dict[str, Any]:
    """Stage and commit the new version: the parent's files, the increment's, one manifest."""
    target = VersionPaths(config.output, version)
    parent_dir = VersionPaths(config.output, parent).final
    fs = filesystem(target.staging)
    prepare_staging(target)

    renamed_shards = [{**shard, "path": _versioned(shard["path"], version)} for shard in increment["shards"]]
    renamed_audit = [_versioned(path, version) for path in increment["audit"]["files"]]
    placements = [(f"{parent_dir}/{s['path']}", s["path"]) for s in parent_manifest["shards"]]
    placements += [(f"{parent_dir}/{path}", path) for path in parent_manifest["audit"]["files"]]
    placements += [(f"{increment_dir}/{old['path']}", new["path"]) for old, new in zip(increment["shards"], renamed_shards)]
    placements += [(f"{increment_dir}/{old}", new) for old, new in zip(increment["audit"]["files"], renamed_audit)]
    index_dir = f"{increment_dir}/{INDEX_FOLDER}"
    index_files = fs._strip_protocol(index_dir).rstrip("/") + "/"
    placements += [(path, f"{INDEX_FOLDER}/{path.removeprefix(index_files)}") for path in fs.find(index_dir)]
    for source, relative in placements:
        _place(fs, source, f"{target.staging}/{relative}")

    lineage = {"version": parent, "manifest_sha256": hashlib.sha256(fs.cat_file(f"{parent_dir}/{MANIFEST}")).hexdigest()}
    manifest = merged_manifest(config, version, lineage, parent_manifest, increment, renamed_shards, renamed_audit)
    commit(target, manifest)
    return manifest


def merged_manifest(
    config: BuildConfig,
    version: str,
    lineage: dict[str, str],
    parent_manifest: dict[str, Any],
    increment: dict[str, Any],
    increment_shards: list[dict[str, Any]],
    increment_audit: list[str],
) -> dict[str, Any]:
    """The parent's manifest plus the increment's: inputs, counts and files add up; ``increment``
    keeps what this rebuild alone read, kept and dropped."""
    own = dataclasses.replace(config, dataset=dataclasses.replace(config.dataset, version=version))
    this_rebuild = {key: value for key, value in increment.items() if key not in ("dataset", "config", "dedup_index")}
    this_rebuild.update(shards=increment_shards, audit={**increment["audit"], "files": increment_audit})
    return {
        "dataset": to_dict(own.dataset),
        "parent": lineage,
        "config": to_dict(own),
        "inputs": sorted(parent_manifest["inputs"] + increment["inputs"], key=lambda item: item["path"]),
        "records": parent_manifest["records"] + increment["records"],
        "documents": parent_manifest["documents"] + increment["documents"],
        "text_bytes": parent_manifest["text_bytes"] + increment["text_bytes"],
        "read_errors": _add_counts(parent_manifest["read_errors"], increment["read_errors"]),
        "stages": _add_stages(parent_manifest["stages"], increment["stages"]),
        "shards": parent_manifest["shards"] + increment_shards,
        "audit": {
            "rows": parent_manifest["audit"]["rows"] + increment["audit"]["rows"],
            "files": parent_manifest["audit"]["files"] + increment_audit,
        },
        # The increment's index: the parent's rows and the new documents', so it covers this version.
        "dedup_index": increment["dedup_index"],
        "increment": this_rebuild,
    }


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_rebuildable(config: BuildConfig) -> None:
    if Plan(config).dedup_config is None:
        raise ConfigError("stages: a rebuild needs a dedup stage, so new documents are deduplicated against the dataset")
    try:
        next_version(config.dataset.version)
    except ValueError as error:
        raise ConfigError(f"dataset.version: {error}") from None


def _check_same_settings(config: BuildConfig, parent_manifest: dict[str, Any], parent: str) -> None:
    ours, theirs = to_dict(config), parent_manifest["config"]
    if config.dataset.name != theirs["dataset"]["name"]:
        raise ConfigError(f"dataset.name: {config.dataset.name!r}, but {parent} belongs to {theirs['dataset']['name']!r}")
    for key in SHARED_SETTINGS:
        if ours[key] != theirs[key]:
            raise ConfigError(
                f"{key}: differs from the settings {parent} was built with; a version built with new "
                "settings is a full build (jobs/build_dataset.py), not a rebuild"
            )


def _advance(root: str, version: str) -> None:
    """Make ``version`` current; scratch increments of older versions are of no use after that."""
    set_current(root, version)
    scratch = f"{root.rstrip('/')}/{INCREMENTS}"
    fs = filesystem(scratch)
    if fs.exists(scratch):
        fs.rm(scratch, recursive=True)


def _place(fs, source: str, target: str) -> None:
    """Put an immutable file of one version into another: a hard link on a local disk (the bytes are
    not stored twice), a copy on an object store (done by the store, server side)."""
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    if "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        try:
            os.link(source, target)
            return
        except OSError:  # a file system without hard links: copy instead
            pass
    fs.copy(source, target)


def _versioned(path: str, version: str) -> str:
    """``shards/part-00000-of-00002.parquet`` -> ``shards/v2-part-00000-of-00002.parquet``."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/{version}-{name}"


def _id_name(item: dict[str, Any]) -> str:
    return item.get("name") or item["path"].rstrip("/").rsplit("/", 1)[-1]


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + count
    return dict(sorted(total.items()))


def _add_stages(parent: list[dict[str, Any]], increment: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if [s["name"] for s in parent] != [s["name"] for s in increment]:
        raise VersionError("the increment ran other stages than its parent version")
    return [
        {
            "name": p["name"],
            "docs_in": p["docs_in"] + i["docs_in"],
            "docs_out": p["docs_out"] + i["docs_out"],
            "drops": _add_counts(p["drops"], i["drops"]),
            "counters": _add_counts(p["counters"], i["counters"]),
        }
        for p, i in zip(parent, increment)
    ]


# ---------------------------------------------------------------------------------------------
# Tracking: one MLflow run per new version, linked to the run that built its parent

PARENT_VERSION_TAG = "dataset.parent_version"
PARENT_RUN_TAG = "dataset.parent_run_id"


def log_rebuild(result: RebuildResult, experiment: str, tokens: dict[str, Any] | None = None) -> str:
    """Log a new version; returns the run id. The first version's run is a build's. A rebuild's run
    holds the whole version like a build's (config, counts, manifest, funnel), the increment's
    counts and throughput as ``increment.*`` metrics, and tags naming the parent version and the
    run that built it (found by its ``dataset.name`` and ``dataset.version`` tags)."""
    if result.parent is None:
        return log_build(result.manifest, result.seconds, experiment, tokens=tokens)
    dataset = result.manifest["dataset"]
    tags = {PARENT_VERSION_TAG: result.parent}
    parent_run = tracking.find_run(experiment, {"dataset.name": dataset["name"], "dataset.version": result.parent})
    if parent_run is None:
        logger.warning("no run in experiment %r built %s %s; the new run names the version only",
                       experiment, dataset["name"], result.parent)
    else:
        tags[PARENT_RUN_TAG] = parent_run
    run_id = log_build(result.manifest, {}, experiment, tags=tags, tokens=tokens)
    increment = {**result.manifest["increment"], "dataset": dataset}
    metrics = {f"increment.{key}": value for key, value in stage_metrics(increment, result.seconds).items()}
    tracking.RunLogger(tracking.tracking_uri(), run_id).log_metrics(metrics, step=0)
    return run_id
