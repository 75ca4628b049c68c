"""Typed configs: YAML + --set overrides, and one-line errors that name the key."""

from __future__ import annotations

import pytest

from pipeline.build_config import BuildConfig, Plan
from pipeline.config import ConfigError, flatten, load_config


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_keep_types(tmp_path):
    path = write(tmp_path, "inputs: [a.warc.gz]\nshards: {target_mb: 8}\n")
    config = load_config(BuildConfig, path, ["shards.target_mb=0.5", "read.max_document_bytes=1000", 'inputs=["x", "y"]'])
    assert config.shards.target_mb == 0.5
    assert config.read.max_document_bytes == 1000
    assert config.inputs == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("shards: {target_mbb: 3}\n", [], "shards.target_mbb: unknown key"),
        ("", ["read.max_document_bytes=lots"], "read.max_document_bytes: Input should be a valid integer"),
        ("nonsense: 1\n", [], "nonsense: unknown key"),
        ("- a list\n", [], "the top level must be a mapping"),
        ("", ["no-equals-sign"], "expected key=value"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(BuildConfig, write(tmp_path, text), overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_stage_list_errors_name_the_entry(tmp_path):
    config = load_config(BuildConfig, write(tmp_path, "inputs: [x]\nstages:\n  - extract: {}\n  - no_such_stage: {}\n"))
    with pytest.raises(ConfigError, match=r"stages\.1\.no_such_stage: unknown stage"):
        Plan(config)


def test_missing_inputs_is_a_config_error():
    with pytest.raises(ConfigError, match="inputs"):
        Plan(BuildConfig())


def test_flatten_for_mlflow_params():
    assert flatten({"a": {"b": 1, "c": [2, {"d": 3}]}}) == {"a.b": 1, "a.c.0": 2, "a.c.1.d": 3}


def test_environment_variables_in_values_with_defaults(tmp_path, monkeypatch):
    text = "inputs: ['${WEBLLM_TEST_ROOT:-data}/crawl/']\noutput: ${WEBLLM_TEST_ROOT:-data}/datasets/web\n"
    monkeypatch.delenv("WEBLLM_TEST_ROOT", raising=False)
    local = load_config(BuildConfig, write(tmp_path, text))
    assert (local.inputs, local.output) == (["data/crawl/"], "data/datasets/web")
    monkeypatch.setenv("WEBLLM_TEST_ROOT", "s3://bucket/webllm")
    cluster = load_config(BuildConfig, write(tmp_path, text), ["dataset.version=v2"])
    assert (cluster.inputs, cluster.output) == (["s3://bucket/webllm/crawl/"], "s3://bucket/webllm/datasets/web")


def test_an_unset_variable_without_a_default_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBLLM_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"^output: the environment variable WEBLLM_TEST_UNSET is not set"):
        load_config(BuildConfig, write(tmp_path, "inputs: [x]\noutput: ${WEBLLM_TEST_UNSET}/web\n"))
