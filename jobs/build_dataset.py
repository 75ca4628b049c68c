"""Build a dataset version from raw crawl files.

    python jobs/build_dataset.py --config jobs/configs/demo.yaml [--input PATH ...] [--output DIR]
                                 [--set key=value ...] [--overwrite]

Runs on a local Ray, or on a cluster under ``ray job submit --working-dir . -- python jobs/...``.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray

from pipeline.build import BuildConfig, build
from pipeline.config import ConfigError, load_config
from pipeline.report import log_build, summary_table
from pipeline.shards import VersionPaths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="build config YAML (jobs/configs/*.yaml)")
    parser.add_argument("--input", action="append", default=[], help="input path, glob or URL (repeatable; replaces the config's inputs)")
    parser.add_argument("--output", help="dataset root folder (replaces the config's output)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if this version is complete")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    if args.input:
        overrides.append(f"inputs={json.dumps(args.input)}")
    if args.output:
        overrides.append(f"output={args.output}")
    try:
        config = load_config(BuildConfig, args.config, overrides)
        ray.init()
        result = build(config, overwrite=args.overwrite)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    version_dir = VersionPaths(config.output, config.dataset.version).final
    if result.skipped:
        print(f"{version_dir} is already complete; nothing to do (use --overwrite to rebuild)")
        return 0
    run_id = log_build(result, result.seconds, config.experiment)
    print(summary_table(result, result.seconds))
    print(f"dataset: {version_dir}\nMLflow run: {run_id} (experiment {config.experiment!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
