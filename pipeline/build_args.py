"""The command line the build and rebuild jobs share: a build config plus overrides."""

from __future__ import annotations

import argparse
import json

from pipeline.build_config import BuildConfig
from pipeline.config import config_parser, load_config


def build_parser(description: str, config_help: str) -> argparse.ArgumentParser:
    parser = config_parser(description, config_help)
    parser.add_argument("--input", action="append", default=[],
                        help="input path, glob, folder or URL (repeatable; replaces the config's inputs)")
    parser.add_argument("--output", help="dataset root folder (replaces the config's output)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's output (execution plans, operator statistics) on the console")
    return parser


def load_build_config(args: argparse.Namespace) -> BuildConfig:
    """The config file with ``--input``, ``--output`` and ``--set`` applied; raises ``ConfigError``."""
    overrides = list(args.set)
    if args.input:
        overrides.append(f"inputs={json.dumps(args.input)}")
    if args.output:
        overrides.append(f"output={args.output}")
    return load_config(BuildConfig, args.config, overrides)
