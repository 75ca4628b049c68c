"""Add a new version to a dataset from the inputs that landed since its current version.

    python jobs/rebuild_dataset.py --config jobs/configs/demo.yaml [--input PATH ...]
                                   [--output DIR] [--set key=value ...]

The config is a build config (``jobs/build_dataset.py``) with a dedup stage; its ``inputs`` are
listed on every run and compared with the current version's. With nothing new it does nothing;
with no version yet it builds ``dataset.version`` from everything. Made to run on a schedule:
a RayCronJob (infra/kuberay/) or a cron line (infra/README.md).
"""

from __future__ import annotations

import sys

import ray

from pipeline.build import tokenize_version, tokens_dir
from pipeline.build_args import build_parser, load_build_config
from pipeline.config import ConfigError
from pipeline.rebuild import log_rebuild, rebuild
from pipeline.report import summary_table, tokens_summary
from pipeline.shards import VersionPaths
from pipeline.tokenize import TokenShardsExist


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__, "build config YAML with a dedup stage (jobs/configs/*.yaml)").parse_args(argv)
    try:
        config = load_build_config(args)
        ray.init()
        result = rebuild(config)
        # Every run makes sure the current version has its token shards (a no-op when it does).
        tokens = tokenize_version(config, result.version)
    except (ConfigError, TokenShardsExist) as error:  # a bad config, or token shards made otherwise
        print(f"error: {error}", file=sys.stderr)
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
