"""Add a new version to a dataset from the inputs that landed since its current version.

    python jobs/rebuild_dataset.py --config jobs/configs/demo.yaml [--input PATH ...]
                                   [--output DIR] [--set key=value ...] [--verbose]
    python jobs/rebuild_dataset.py --config ... --gc [--gc-min-age-hours H]   # remove unlisted files
    python jobs/rebuild_dataset.py --config ... --compact-index               # merge index parts

The config is a build config (``jobs/build_dataset.py``) with a dedup stage; its ``inputs`` are
listed on every run and compared with the current version's. With nothing new it does nothing;
with no version yet it builds ``dataset.version`` from everything. Made to run on a schedule:
a RayCronJob (infra/kuberay/) or a cron line (infra/README.md).

Runs never overlap: a run holds a lease in the dataset's storage (``pipeline/lease.py``), and a run
that finds the lease held by a live run says so and exits 0, so the catch-up runs a scheduler starts
after downtime collapse into one. A run stops itself after ``schedule.max_seconds`` (exit 3),
leaving the current version as it was.

``--gc`` removes the files no version's manifest lists (what killed builds and ``--overwrite``
left), in the dataset and its token shards; build folders younger than ``--gc-min-age-hours`` are
spared. ``--compact-index`` merges the current version's dedup index parts (one per rebuild) into
one. Both take the same lease as a rebuild.
"""

from __future__ import annotations

import os
import sys
import threading

import ray

from pipeline.build import tokenize_version, tokens_dir, tokens_root
from pipeline.build_config import BuildConfig
from pipeline.build_args import build_parser, load_build_config
from pipeline.config import ConfigError
from pipeline.console import Console, job_console
from pipeline.lease import LeaseHeld, held
from pipeline.rebuild import log_rebuild, rebuild
from pipeline.report import summary_table, tokens_summary
from pipeline.maintenance import collect_dataset_garbage, compact_current_index
from pipeline.storage import absolute
from pipeline.tokenize import TokenShardsExist
from pipeline.versions import VersionError, VersionPaths

# Beyond max_seconds, the lease lasts this much longer: the time a run takes to stop itself.
STOP_MARGIN_SECONDS = 600
TIMED_OUT = 3


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__, "build config YAML with a dedup stage (jobs/configs/*.yaml)")
    upkeep = parser.add_mutually_exclusive_group()
    upkeep.add_argument("--gc", action="store_true", help="remove the files no version lists, then exit")
    upkeep.add_argument("--compact-index", action="store_true", help="merge the current version's dedup index parts")
    parser.add_argument("--gc-min-age-hours", type=float, default=24.0,
                        help="--gc spares build folders younger than this (a build may be writing them)")
    args = parser.parse_args(argv)
    try:
        config = load_build_config(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with (held(absolute(config.output), config.schedule.max_seconds + STOP_MARGIN_SECONDS),
              job_console("rebuild", args.verbose) as console):
            stop_after(config.schedule.max_seconds, console)
            if args.gc:
                return collect(config, args.gc_min_age_hours * 3600)
            if args.compact_index:
                return compact(config, console)
            return run(config, console)
    except LeaseHeld as error:
        print(f"another rebuild is running, so this one does nothing: {error}")
        return 0


def collect(config: BuildConfig, min_age_seconds: float) -> int:
    garbage = collect_dataset_garbage(config, min_age_seconds)
    for root, removed in ((config.output, garbage.text), (tokens_root(config) if config.tokenize else None, garbage.tokens)):
        if root is None:
            continue
        print(f"{root}: removed {len(removed)} files no manifest lists" + "".join(f"\n  {p}" for p in removed[:20]))
    return 0


def compact(config: BuildConfig, console: Console) -> int:
    try:
        ray.init()
        manifest = compact_current_index(config)
    except (ConfigError, VersionError) as error:
        console.error(f"error: {error}")
        return 2
    if manifest is None:
        print("the current version's dedup index is one part already; nothing to do")
    else:
        print(f"dedup index compacted into {manifest['dedup_index']['parts'][0]} ({manifest['dedup_index']['rows']:,} rows)")
    return 0


def stop_after(seconds: int, console: Console) -> None:
    """End the whole process (its Ray tasks with it) once ``seconds`` have passed. Nothing is lost:
    CURRENT moves only after a complete version is published."""

    def give_up() -> None:
        console.error(f"error: the rebuild ran longer than schedule.max_seconds={seconds}; stopped, the current "
                      "version is as it was")
        os._exit(TIMED_OUT)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def run(config: BuildConfig, console: Console) -> int:
    try:
        ray.init()
        result = rebuild(config)
        # Every run makes sure the current version has its token shards (a no-op when it does).
        tokens = tokenize_version(config, result.version)
    except (ConfigError, TokenShardsExist) as error:  # a bad config, or token shards made otherwise
        console.error(f"error: {error}")
        return 2
    version_dir = VersionPaths(config.output, result.version).final
    if result.outcome == "unchanged":
        print(f"no new inputs since {version_dir}; nothing to do")
        return 0
    run_id = log_rebuild(result, config.experiment, tokens=tokens)
    if result.outcome == "first":
        print(summary_table(result.manifest, result.seconds))
    else:
        manifest = result.manifest
        print(summary_table({**manifest["increment"], "dataset": manifest["dataset"]}, result.seconds))
        print(f"{result.version} = {result.parent} + {manifest['increment']['documents']:,} new documents "
              f"= {manifest['documents']:,} documents")
    print(f"dataset: {version_dir} (now current)\nMLflow run: {run_id} (experiment {config.experiment!r})")
    if tokens is not None:
        print(tokens_summary(tokens, tokens_dir(config, result.version)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
