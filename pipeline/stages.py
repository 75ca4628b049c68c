"""Every stage a build config can name, and how to build one from its YAML options.

A build's ``stages:`` list holds one-key mappings, ``- gopher_quality: {min_words: 50}``, run in the
order given. ``dedup`` is the one entry that is not a per-batch stage: it marks where the global
deduplication runs (see ``build.py``).
"""

from __future__ import annotations

from typing import Any

from pipeline.config import ConfigError, validate
from pipeline.decontaminate import Decontaminate, DecontaminateConfig
from pipeline.extract import Extract, ExtractConfig
from pipeline.filters import STAGES as FILTERS
from pipeline.stage import Stage

DEDUP = "dedup"

# name -> (config class, stage class); a stage's ``name`` is its key and prefixes its drop reasons.
REGISTRY: dict[str, tuple[type, type]] = {
    "extract": (ExtractConfig, Extract),
    **FILTERS,
    "decontaminate": (DecontaminateConfig, Decontaminate),
}


def parse_stage_entry(entry: Any, index: int) -> tuple[str, dict[str, Any]]:
    """``{name: options}`` -> (name, options), with a one-line error naming the entry."""
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"stages.{index}: expected a one-key mapping like '- gopher_quality: {{}}'")
    ((name, options),) = entry.items()
    if name != DEDUP and name not in REGISTRY:
        raise ConfigError(f"stages.{index}.{name}: unknown stage (known: {', '.join(sorted([*REGISTRY, DEDUP]))})")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"stages.{index}.{name}: options must be a mapping")
    return name, options or {}


def stage_config(name: str, options: dict[str, Any], key: str):
    """Validate a stage's options; errors name ``<key>.<option>``."""
    if name not in REGISTRY:
        raise ConfigError(f"{key}: unknown stage (known: {', '.join(sorted(REGISTRY))})")
    return validate(REGISTRY[name][0], options, prefix=key)


def make_stage(name: str, config) -> Stage:
    return REGISTRY[name][1](config)


def build_stage(name: str, options: dict[str, Any] | None = None) -> Stage:
    """A stage from its name and raw options, e.g. ``build_stage("gopher_quality", {"min_words": 100})``."""
    return make_stage(name, stage_config(name, options or {}, key=f"stages.{name}"))
