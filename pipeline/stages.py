"""Every stage a build config can name, and how to build one from its YAML options.

A build's ``stages:`` list holds one-key mappings, ``- gopher_quality: {min_words: 50}``, run in the
order given. ``dedup`` is the one entry that is not a per-batch stage: it marks where the global
deduplication runs (see ``build.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.config import ConfigError, validate
from pipeline.stage import Stage

DEDUP = "dedup"

# name -> (module, config class, stage class). Imported on use, so a config that names only
# cheap stages never pays for loading fastText or trafilatura.
REGISTRY: dict[str, tuple[str, str, str]] = {
    "extract": ("pipeline.extract", "ExtractConfig", "Extract"),
    "url_filter": ("pipeline.filters.url", "URLFilterConfig", "URLFilter"),
    "language": ("pipeline.filters.language", "LanguageConfig", "LanguageFilter"),
    "gopher_repetition": ("pipeline.filters.gopher", "GopherRepetitionConfig", "GopherRepetitionFilter"),
    "gopher_quality": ("pipeline.filters.gopher", "GopherQualityConfig", "GopherQualityFilter"),
    "c4_quality": ("pipeline.filters.c4", "C4QualityConfig", "C4QualityFilter"),
    "fineweb_quality": ("pipeline.filters.fineweb", "FineWebQualityConfig", "FineWebQualityFilter"),
    "pii": ("pipeline.filters.pii", "PIIConfig", "PIIFormatter"),
    "decontaminate": ("pipeline.decontaminate", "DecontaminateConfig", "Decontaminate"),
}


def parse_stage_entry(entry: Any, index: int) -> tuple[str, dict[str, Any]]:
    """``{name: options}`` -> (name, options), with a one-line error naming the entry."""
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"stages.{index}: expected a one-key mapping like '- gopher_quality: {{}}'")
    (name, options), = entry.items()
    if name != DEDUP and name not in REGISTRY:
        raise ConfigError(f"stages.{index}.{name}: unknown stage (known: {', '.join(sorted([*REGISTRY, DEDUP]))})")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"stages.{index}.{name}: options must be a mapping")
    return name, options or {}


def stage_config(name: str, options: dict[str, Any], index: int):
    module, config_class, _ = REGISTRY[name]
    return validate(getattr(importlib.import_module(module), config_class), options, prefix=f"stages.{index}.{name}")


def build_stage(name: str, config) -> Stage:
    module, _, stage_class = REGISTRY[name]
    return getattr(importlib.import_module(module), stage_class)(config)
