"""Incremental rebuilds: a new dataset version from the inputs that landed since the current one.

    list the config's inputs --compare with the current version's manifest--> new files (none: stop)
    build the new files alone into <root>/<version>/<build>/, deduplicated against the current
        version's dedup index parts (``build.write_version``)
    publish <version>: a manifest listing the parent's files by path (``../<parent>/...``, nothing
        copied) and the new build's, with the parent's index parts plus the new one
    then move CURRENT to it (``versions.py``)

A rebuild writes and reads O(new data): new shards, new audit files and a new index part; the
parent's files are referenced, never rewritten. Nothing of the parent version is ever written and
CURRENT moves last, so a run killed at any point leaves the parent current and intact; the next run
builds the increment again in a new build folder, and ``collect_garbage`` removes the old one. A
published version that CURRENT never reached is adopted. With no current version yet, the first run
is an ordinary full build of ``dataset.version``.

Runs must not overlap (two would build the same next version): the job holds a lease
(``lease.py``) and bounds its time (``schedule.max_seconds``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal

from pipeline import tracking
from pipeline.build import build, write_version
from pipeline.build_config import BuildConfig, Plan
from pipeline.config import ConfigError, to_dict
from pipeline.readers import list_inputs
from pipeline.report import log_build, stage_metrics
from pipeline.storage import absolute, sha256_of
from pipeline.versions import (
    MANIFEST,
    Build,
    VersionError,
    VersionPaths,
    is_complete,
    next_version,
    publish,
    read_current,
    read_manifest,
    rebase,
    set_current,
    version_file,
)

logger = logging.getLogger(__name__)

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
        set_current(root, config.dataset.version)
        return RebuildResult("first", config.dataset.version, None, dict(result), result.seconds)

    parent_manifest = read_manifest(VersionPaths(root, current).final)
    _check_same_settings(config, parent_manifest, current)
    new = new_inputs(list_inputs(config.inputs), parent_manifest["inputs"], current)
    if not new:
        return RebuildResult("unchanged", current, None, parent_manifest, {})

    version = next_version(current)
    target = Build.start(VersionPaths(root, version))
    own = dataclasses.replace(config, dataset=dataclasses.replace(config.dataset, version=version))
    parent_dir = VersionPaths(root, current).final
    parent_index = [version_file(parent_dir, part) for part in parent_manifest["dedup_index"]["parts"]]
    increment = write_version(own, target, new, previous_index=parent_index)
    lineage = {"version": current, "manifest_sha256": sha256_of(f"{parent_dir}/{MANIFEST}")}
    from_parent = partial(rebase, from_dir=parent_dir, to_dir=target.paths.final)
    manifest = merged_manifest(own, lineage, parent_manifest, increment.manifest, from_parent)
    inherited = [{**f, "path": from_parent(f["path"])} for f in parent_manifest["files"]]
    manifest = publish(target, manifest, increment.hashes, inherited=inherited)
    set_current(root, version)
    return RebuildResult("increment", version, current, manifest, increment.seconds)


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
        set_current(root, current)
    while is_complete(successor := VersionPaths(root, next_version(current))):
        if read_manifest(successor.final).get("parent", {}).get("version") != current:
            raise VersionError(
                f"{successor.final} exists but is not a rebuild of {current}: move it away or point "
                f"{root}/CURRENT at the version to build on"
            )
        current = successor.version
        set_current(root, current)
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


def merged_manifest(
    config: BuildConfig,
    lineage: dict[str, str],
    parent_manifest: dict[str, Any],
    increment: dict[str, Any],
    from_parent: Callable[[str], str],
) -> dict[str, Any]:
    """The parent's manifest plus the increment's: inputs, counts and files add up (the parent's
    paths seen from the new version, by ``from_parent``); ``increment`` keeps what this rebuild
    alone read, kept and dropped."""
    this_rebuild = {key: value for key, value in increment.items() if key not in ("dataset", "config", "dedup_index")}
    parent_index, new_index = parent_manifest["dedup_index"], increment["dedup_index"]
    return {
        "dataset": to_dict(config.dataset),
        "parent": lineage,
        "config": to_dict(config),
        "inputs": sorted(parent_manifest["inputs"] + increment["inputs"], key=lambda item: item["path"]),
        "records": parent_manifest["records"] + increment["records"],
        "documents": parent_manifest["documents"] + increment["documents"],
        "text_bytes": parent_manifest["text_bytes"] + increment["text_bytes"],
        "read_errors": _add_counts(parent_manifest["read_errors"], increment["read_errors"]),
        "stages": _add_stages(parent_manifest["stages"], increment["stages"]),
        "shards": [{**s, "path": from_parent(s["path"])} for s in parent_manifest["shards"]] + increment["shards"],
        "audit": {
            "rows": parent_manifest["audit"]["rows"] + increment["audit"]["rows"],
            "files": [from_parent(path) for path in parent_manifest["audit"]["files"]] + increment["audit"]["files"],
        },
        # The parent's index parts and this increment's: together they cover this version.
        "dedup_index": {
            "parts": [from_parent(part) for part in parent_index["parts"]] + new_index["parts"],
            "part_rows": parent_index["part_rows"] + new_index["part_rows"],
            "rows": parent_index["rows"] + new_index["rows"],
        },
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
