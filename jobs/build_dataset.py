"""Build a dataset version from raw crawl files.

    python jobs/build_dataset.py --config jobs/configs/demo.yaml [--input PATH ...] [--output DIR]
                                 [--set key=value ...] [--overwrite] [--verbose]

Runs on a local Ray, or on a cluster under ``ray job submit --working-dir . -- python jobs/...``.
"""

from __future__ import annotations

import sys

import ray

from pipeline.build import build, tokenize_version, tokens_dir
from pipeline.build_args import build_parser, load_build_config
from pipeline.config import ConfigError
from pipeline.console import job_console
from pipeline.report import log_build, summary_table, tokens_summary
from pipeline.tokenize import TokenShardsExist
from pipeline.versions import VersionPaths


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__, "build config YAML (jobs/configs/*.yaml)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="build this version again even if it is complete: a new build beside the old one, whose files "
             "stay until the dataset's garbage collection (jobs/rebuild_dataset.py --gc)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_build_config(args)
        with job_console("build", args.verbose):
            ray.init()
            result = build(config, overwrite=args.overwrite)
            # Also when the text was complete: finishes token shards an interrupted run left undone.
            tokens = tokenize_version(config, config.dataset.version, overwrite=args.overwrite)
            run_id = None if result.skipped else log_build(result, result.seconds, config.experiment, tokens=tokens)
    except (ConfigError, TokenShardsExist) as error:  # a bad config, or token shards made otherwise
        print(f"error: {error}", file=sys.stderr)
        return 2
    version_dir = VersionPaths(config.output, config.dataset.version).final
    if result.skipped:
        print(f"{version_dir} is already complete; nothing to do (use --overwrite to rebuild)")
    else:
        print(summary_table(result, result.seconds))
        print(f"dataset: {version_dir}\nMLflow run: {run_id} (experiment {config.experiment!r})")
    if tokens is not None:
        print(tokens_summary(tokens, tokens_dir(config, config.dataset.version)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
