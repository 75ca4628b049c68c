"""The configs the cluster runs, loaded by their jobs' own loaders as the cluster's pods would load
them: with ``WEBLLM_STORAGE`` set, every path they write or read is on shared storage (Ray Train
refuses local paths on more than one node); without it, the same files run on a laptop."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.config import preset
from model.finetune.classify import ClassifierConfig
from model.finetune.instruct import InstructConfig
from model.pretrain import PretrainConfig, with_absolute_paths
from pipeline.build_config import Plan
from pipeline.build_args import build_parser, load_build_config
from pipeline.config import load_config
from tests.unit.test_infra_kuberay import containers, of_kind

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jobs" / "configs"
STORAGE = "s3://webllm-data"


def storage_paths(name: str) -> list[str]:
    """Every path the named production config reads or writes, as its job loads it."""
    path = str(CONFIGS / f"{name}.yaml")
    if name == "rebuild-web":
        config = load_build_config(build_parser("", "").parse_args(["--config", path]))
        Plan(config)  # the stage list validates too
        return [*config.inputs, config.output, config.tokenize.output]
    if name == "pretrain-gpt2-124m":
        config = with_absolute_paths(load_config(PretrainConfig, path))
        preset(config.model.preset)
        return [config.run.output, *(source.path for source in config.data.sources)]
    config = load_config({"finetune-classifier": ClassifierConfig, "finetune-instruct": InstructConfig}[name], path)
    return [config.run.output, config.model.init_from]


@pytest.mark.parametrize("name", ["rebuild-web", "pretrain-gpt2-124m", "finetune-classifier", "finetune-instruct"])
def test_on_the_cluster_every_path_is_on_shared_storage(name, monkeypatch):
    monkeypatch.setenv("WEBLLM_STORAGE", STORAGE)
    paths = storage_paths(name)
    assert paths and all(path.startswith(f"{STORAGE}/") for path in paths), paths


@pytest.mark.parametrize("name", ["rebuild-web", "pretrain-gpt2-124m", "finetune-classifier", "finetune-instruct"])
def test_on_a_laptop_the_same_config_uses_local_folders(name, monkeypatch):
    monkeypatch.delenv("WEBLLM_STORAGE", raising=False)
    assert all("://" not in path for path in storage_paths(name))


def test_every_pod_of_the_jobs_cluster_names_the_shared_storage():
    (cluster,) = of_kind("RayCluster")
    for container in containers(cluster):
        env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
        assert env.get("WEBLLM_STORAGE", "").startswith(("s3://", "gs://")), container["name"]


def job_config(path: Path):
    """A config under jobs/configs, loaded and validated by its job's own loader, as that job would."""
    if path.name.startswith("pretrain-"):
        config = with_absolute_paths(load_config(PretrainConfig, path))
        preset(config.model.preset, **config.model.overrides)
        return config
    if path.name.startswith("finetune-"):
        return load_config(ClassifierConfig if "classifier" in path.name else InstructConfig, path)
    config = load_build_config(build_parser("", "").parse_args(["--config", str(path)]))
    Plan(config)
    return config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_job_config_loads_and_validates(path):
    assert job_config(path)


def test_the_race_config_reads_the_tinyshakespeare_build(monkeypatch):
    """jobs/configs/pretrain-tinyshakespeare.yaml trains on what jobs/configs/tinyshakespeare.yaml makes."""
    monkeypatch.delenv("CORPUS_DIR", raising=False)
    build = job_config(CONFIGS / "tinyshakespeare.yaml")
    pretrain = job_config(CONFIGS / "pretrain-tinyshakespeare.yaml")
    assert build.inputs == ["../shared/corpus/text/tinyshakespeare.txt"] and build.tokenize.tokenizer == "bytes"
    made = Path(build.tokenize.output).resolve() / build.dataset.version
    assert [Path(source.path) for source in pretrain.data.sources] == [made]
