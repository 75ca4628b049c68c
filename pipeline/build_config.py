"""A build's typed config (one YAML file), and the plan it makes: the stage list cut around dedup."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any

from pydantic import Field

from pipeline.config import ConfigError, config_dataclass, validate
from pipeline.dedup import DedupConfig
from pipeline.readers import ReadConfig
from pipeline.shards import ShardConfig
from pipeline.stages import DEDUP, parse_stage_entry, stage_config
from pipeline.tokenize import TokenizeConfig

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
