"""Composes the stages a build config names into one Ray Data plan, and commits the result.

    inputs --read--> documents --stages...--> [dedup] --stages...--> shards + audit + manifest.json

Reading runs as Ray tasks, one input file each. Each run of consecutive stages runs as one
``map_batches`` over an actor pool (models load once per actor). Deduplication, when the config
lists it, is a global step between two such runs. The last step shuffles rows into deterministic
shards and counts every drop by reason, so every input record is accounted for.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import ray
from pydantic import Field

from pipeline.actor_pool import actor_pool
from pipeline.chain import StageChain
from pipeline.config import ConfigError, config_dataclass, to_dict, validate
from pipeline.dedup import INDEX_FOLDER, DedupConfig, deduplicate, write_index
from pipeline.readers import ReadConfig, list_inputs, read_files
from pipeline.shards import ShardConfig, assign_shard, shard_count, text_bytes, write_shard
from pipeline.storage import absolute
from pipeline.decontaminate import DecontaminateConfig, eval_set_summaries
from pipeline.stages import DEDUP, make_stage, parse_stage_entry, stage_config
from pipeline.tokenize import TokenizeConfig, build_token_shards
from pipeline.versions import Build, VersionPaths, is_complete, publish, read_manifest

READ = "read"
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


@config_dataclass
class DatasetConfig:
    # Both name folders and tag MLflow runs, so they stay plain.
    name: Annotated[str, Field(pattern=SAFE_NAME)] = "demo"
    version: Annotated[str, Field(pattern=SAFE_NAME)] = "v1"


@config_dataclass
class ComputeConfig:
    # Actors running the stage chain; each loads the stages' models once.
    stage_workers: int = 2
    batch_size: int = 64


@config_dataclass
class TokensConfig(TokenizeConfig):
    # Token versions land in ``<output>/<version>``; None: beside the dataset, ``<dataset output>-tokens``.
    output: str | None = None


@config_dataclass
class ScheduleConfig:
    """For rebuilds that run on a schedule (``jobs/rebuild_dataset.py``)."""

    # A run stops itself after this long: keep it below the schedule's period, so that a slow run
    # ends before the next one starts. Its lease on the dataset lasts as long.
    max_seconds: Annotated[int, Field(gt=0)] = 20 * 3600


@config_dataclass
class BuildConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    inputs: list[str] = field(default_factory=list)
    # Dataset root: version ``v1`` lands in ``<output>/v1``.
    output: str = "data/datasets/demo"
    read: ReadConfig = field(default_factory=ReadConfig)
    stages: list[Any] = field(default_factory=list)
    shards: ShardConfig = field(default_factory=ShardConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    # The last step: packed token shards of the finished text (None: text shards only).
    tokenize: TokensConfig | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    experiment: str = "dataset-builds"


class Plan:
    """The validated stage list, cut into per-batch segments around the dedup step."""

    def __init__(self, config: BuildConfig):
        if not config.inputs:
            raise ConfigError("inputs: at least one input path, glob or URL is required")
        self.segments: list[list[tuple[str, Any]]] = [[]]
        self.dedup_config = None
        self.stage_names = [READ]
        for index, entry in enumerate(config.stages):
            name, options = parse_stage_entry(entry, index)
            self.stage_names.append(name)
            if name == DEDUP:
                if self.dedup_config is not None:
                    raise ConfigError(f"stages.{index}.dedup: dedup may appear only once")
                self.dedup_config = validate(DedupConfig, options, prefix=f"stages.{index}.dedup")
                self.segments.append([])
            else:
                self.segments[-1].append((name, stage_config(name, options, key=f"stages.{index}.{name}")))


@ray.remote(num_cpus=0)
class StatsCollector:
    """Gathers per-stage seconds and counters from every chain actor."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.counters: dict[str, Counter[str]] = {}
        # Rows read per input file, kept by path: a read task that Ray retries reports its file again.
        self.rows_read: dict[str, int] = {}

    def add(self, stats: dict[str, Any]) -> None:
        self.seconds.update(stats["seconds"])
        for stage, counts in stats["counters"].items():
            self.counters.setdefault(stage, Counter()).update(counts)

    def add_read(self, path: str, rows: int) -> None:
        self.rows_read[path] = rows

    def get(self) -> dict[str, Any]:
        return {
            "seconds": dict(self.seconds),
            "counters": {k: dict(v) for k, v in self.counters.items()},
            "rows_read": sum(self.rows_read.values()),
        }


def read_and_count(files, config: ReadConfig, collector):
    """``map_batches`` function: ``read_files``, telling the collector how many rows each file gave,
    so the build can check its output against a count taken before any stage ran."""
    for i in range(len(files)):
        rows = 0
        for table in read_files(files.slice(i, 1), config):
            rows += len(table)
            yield table
        ray.get(collector.add_read.remote(files["path"][i].as_py(), rows))


class ChainActor(StageChain):
    """A ``StageChain`` that reports its stats to the collector after each batch."""

    def __init__(self, stages: list[tuple[str, Any]], collector):
        super().__init__([lambda name=name, config=config: make_stage(name, config) for name, config in stages])
        self.collector = collector

    def __call__(self, batch):
        batch = super().__call__(batch)
        self.collector.add.remote(self.take_stats())
        return batch


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
    dedup_index = None
    for position, segment in enumerate(plan.segments):
        if position > 0:
            deduplicated = deduplicate(ds.materialize(), plan.dedup_config, previous_index=previous_index)
            ds, dedup_index = deduplicated.documents, deduplicated.index
        if segment:
            ds = ds.map_batches(
                ChainActor,
                fn_constructor_args=(segment, collector),
                batch_format="pyarrow",
                batch_size=config.compute.batch_size,
                compute=actor_pool(config.compute.stage_workers),
            )
    ds = ds.materialize()

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


class AccountingError(RuntimeError):
    """The output does not account for every row read: a bug, so nothing is published."""


def check_accounting(manifest: dict[str, Any], rows_read: int) -> None:
    """Every row read is kept or dropped with a reason, exactly once: ``kept + drops == read``."""
    dropped = manifest["records"] - manifest["documents"]
    if manifest["records"] != rows_read:
        raise AccountingError(
            f"read {rows_read} rows, but the output accounts for {manifest['records']} "
            f"({manifest['documents']} kept + {dropped} dropped); nothing was published"
        )


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


def assemble_manifest(
    config: BuildConfig,
    plan: Plan,
    inputs: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    counters: dict[str, dict[str, int]],
    build_name: str,
) -> dict[str, Any]:
    """The manifest of one build's files; their paths start at its version folder."""
    summaries = sorted(summaries, key=lambda s: s["shard"])
    drops: Counter[str] = Counter()
    for summary in summaries:
        drops.update(json.loads(summary["drops"]))
    kept = sum(s["rows"] for s in summaries)
    records = kept + sum(drops.values())

    stages, remaining = [], records
    for name in plan.stage_names:
        prefix = f"{name}:"
        stage_drops = {reason.removeprefix(prefix): n for reason, n in sorted(drops.items()) if reason.startswith(prefix)}
        dropped = sum(stage_drops.values())
        stages.append(
            {
                "name": name,
                "docs_in": remaining,
                "docs_out": remaining - dropped,
                "drops": stage_drops,
                "counters": dict(sorted(counters.get(name, {}).items())),
            }
        )
        remaining -= dropped
    for segment in plan.segments:
        for name, options in segment:
            if isinstance(options, DecontaminateConfig):  # what the evaluation sets could catch
                next(stage for stage in stages if stage["name"] == name)["eval_sets"] = eval_set_summaries(options)
    unknown = sorted(r for r in drops if r.split(":", 1)[0] not in plan.stage_names)
    if unknown:
        raise RuntimeError(f"drop reasons from no configured stage: {unknown}")

    return {
        "dataset": to_dict(config.dataset),
        "config": to_dict(config),
        "inputs": inputs,
        "records": records,
        "documents": kept,
        "text_bytes": sum(s["text_bytes"] for s in summaries),
        "read_errors": {
            reason: n for reason, n in stages[0]["drops"].items() if not reason.startswith("record_type:")
        },
        "stages": stages,
        "shards": [
            {"path": f"{build_name}/shards/{s['name']}", "rows": s["rows"], "sha256": s["sha256"]}
            for s in summaries if s["rows"]
        ],
        "audit": {
            "rows": sum(s["audit_rows"] for s in summaries),
            "files": [f"{build_name}/audit/{s['name']}" for s in summaries if s["audit_rows"]],
        },
    }
