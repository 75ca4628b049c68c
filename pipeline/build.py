"""Composes the stages a build config names into one Ray Data plan, and publishes the result.

    inputs --read--> documents --stages...--> [dedup] --stages...--> shards + audit (+ dedup index part)
      --> manifest.json (``versions.py``)

Reading runs as Ray tasks, one input file each. Each run of consecutive stages runs as one
``map_batches`` over an actor pool (models load once per actor). Deduplication, when the config
lists it, is a global step between two such runs. The last step shuffles rows into deterministic
shards and counts every drop by reason, so every input record is accounted for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import ray

from pipeline.actor_pool import actor_pool
from pipeline.build_config import BuildConfig, Plan
from pipeline.build_manifest import assemble_manifest, check_accounting
from pipeline.build_stats import ChainActor, StatsCollector, read_and_count
from pipeline.dedup import INDEX_FOLDER, deduplicate, write_index
from pipeline.readers import list_inputs
from pipeline.progress import report, stages_label
from pipeline.shards import assign_shard, shard_count, text_bytes, write_shard
from pipeline.storage import absolute
from pipeline.tokenize import TokenizeConfig, build_token_shards
from pipeline.versions import Build, VersionPaths, is_complete, publish, read_manifest


class BuildResult(dict):
    """The manifest, plus how long each part took (kept out of the manifest: it is not data)."""

    seconds: dict[str, float]
    skipped: bool = False


@dataclass
class Draft:
    """A version's files, written into its build folder, and the manifest that will publish them."""

    build: Build
    manifest: dict[str, Any]
    hashes: dict[str, str]  # sha256 of the files whose writers computed it, by path from the version folder
    seconds: dict[str, float]


def build(config: BuildConfig, overwrite: bool = False) -> BuildResult:
    """Build (or find complete) the version ``config`` names, and publish it (``versions.py``).
    ``overwrite``: build a complete version again, beside the one there."""
    paths = VersionPaths(absolute(config.output), config.dataset.version)
    if is_complete(paths) and not overwrite:
        result = BuildResult(read_manifest(paths.final))
        result.seconds, result.skipped = {}, True
        return result
    draft = write_version(config, Build.start(paths), list_inputs(config.inputs))
    result = BuildResult(publish(draft.build, draft.manifest, draft.hashes))
    result.seconds = draft.seconds
    return result


def write_version(
    config: BuildConfig, build: Build, inputs: list[dict[str, Any]], previous_index: list[str] | None = None
) -> Draft:
    """Read ``inputs``, run the stages, write shards, audit and dedup index into ``build``'s folder.

    ``previous_index``: the dedup index parts of earlier versions; new documents that duplicate
    anything in them are removed, and the index part written here holds the new documents alone.
    """
    plan = Plan(config)
    started = time.perf_counter()
    collector = StatsCollector.remote()

    ds = ray.data.from_items(inputs, override_num_blocks=max(1, len(inputs))).map_batches(
        read_and_count, fn_kwargs={"config": config.read, "collector": collector}, batch_size=1, batch_format="pyarrow"
    )
    dedup_index, phase, phase_started, detail = None, "read", time.perf_counter(), ""
    for position, segment in enumerate(plan.segments):
        if position > 0:  # what ran so far is one phase; dedup starts the next
            ds = ds.materialize()
            report(stages_label(phase, len(plan.segments[position - 1])), ds.count(), time.perf_counter() - phase_started)
            phase, phase_started = "dedup", time.perf_counter()
            deduplicated = deduplicate(ds, plan.dedup_config, previous_index=previous_index)
            ds, dedup_index = deduplicated.documents, deduplicated.index
            detail = f"{sum(deduplicated.stats['removed'].values()):,} duplicates removed"
        if segment:
            ds = ds.map_batches(
                ChainActor,
                fn_constructor_args=(segment, collector),
                batch_format="pyarrow",
                batch_size=config.compute.batch_size,
                compute=actor_pool(config.compute.stage_workers),
            )
    ds = ds.materialize()
    report(stages_label(phase, len(plan.segments[-1])), ds.count(), time.perf_counter() - phase_started, detail=detail)

    shards_started = time.perf_counter()
    kept_bytes = sum(row["bytes"] for row in ds.map_batches(text_bytes, batch_format="pyarrow").take_all())
    n_shards = shard_count(kept_bytes, config.shards.target_mb)
    summaries = (
        ds.map_batches(assign_shard, fn_kwargs={"n_shards": n_shards}, batch_format="pyarrow")
        .groupby("_shard", num_partitions=n_shards)
        .map_groups(
            write_shard,
            fn_kwargs={"folder": build.folder, "n_shards": n_shards, "config": config.shards},
            batch_format="pyarrow",
        )
        .take_all()
    )
    kept = sum(summary["rows"] for summary in summaries)
    report("shards", kept, time.perf_counter() - shards_started, unit="documents", detail=f"{n_shards} shard{'s' if n_shards != 1 else ''}")
    stats = ray.get(collector.get.remote())
    manifest = assemble_manifest(config, plan, inputs, summaries, stats["counters"], build.name)
    check_accounting(manifest, rows_read=stats["rows_read"])
    if dedup_index is not None:
        index_part = f"{build.name}/{INDEX_FOLDER}"
        written = write_index(dedup_index, f"{build.folder}/{INDEX_FOLDER}", plan.dedup_config)
        manifest["dedup_index"] = {"parts": [index_part], "rows": written["rows"], "part_rows": [written["rows"]]}
    hashes = {f"{build.name}/shards/{s['name']}": s["sha256"] for s in summaries if s["rows"]}
    hashes.update({f"{build.name}/audit/{s['name']}": s["audit_sha256"] for s in summaries if s["audit_sha256"]})
    return Draft(build, manifest, hashes, {"total": time.perf_counter() - started, **stats["seconds"]})


def tokens_root(config: BuildConfig) -> str:
    root = config.tokenize.output if config.tokenize.output else f"{config.output.rstrip('/')}-tokens"
    return absolute(root).rstrip("/")


def tokens_dir(config: BuildConfig, version: str) -> str:
    return f"{tokens_root(config)}/{version}"


def tokenize_version(config: BuildConfig, version: str, overwrite: bool = False) -> dict[str, Any] | None:
    """Token shards of a published text version, if the config asks for them; returns their manifest.
    A no-op when they are already complete, so a rerun finishes what an interrupted one started.
    A rebuilt version tokenizes only its new documents when its parent has token shards."""
    if config.tokenize is None:
        return None
    text_dir = VersionPaths(absolute(config.output), version).final
    tokenize = TokenizeConfig(**{f.name: getattr(config.tokenize, f.name) for f in fields(TokenizeConfig)})
    lineage = read_manifest(text_dir).get("parent")
    parent = tokens_dir(config, lineage["version"]) if lineage else None
    return build_token_shards(text_dir, tokens_dir(config, version), tokenize, parent=parent, overwrite=overwrite)
