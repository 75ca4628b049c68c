"""The `ray up` cluster config, checked as `ray up` checks it (Ray's defaults filled in, then
Ray's own schema), plus what the project needs: its images, GPU worker types, token auth."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "infra" / "cluster" / "aws.yaml").read_text())
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_config_is_valid_for_ray_up():
    validate_config(prepare_config(copy.deepcopy(CONFIG)))


def test_an_unknown_field_is_rejected():
    config = copy.deepcopy(CONFIG)
    config["available_node_types"]["cpu"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))


def test_nodes_run_the_project_images_and_gpu_types_get_the_gpu_image():
    assert CONFIG["docker"]["image"] == f"webllm:{VERSION}-cpu"
    gpu_types = {name: spec for name, spec in CONFIG["available_node_types"].items() if name.startswith("gpu")}
    assert len(gpu_types) >= 2
    for spec in gpu_types.values():
        assert spec["docker"]["worker_image"] == f"webllm:{VERSION}-gpu"
        assert "--gpus all" in spec["docker"]["worker_run_options"]
        assert spec["min_workers"] == 0 < spec["max_workers"]


def test_token_auth_and_credentials_come_from_the_launching_machine():
    assert "--env RAY_AUTH_MODE=token" in CONFIG["docker"]["run_options"]
    assert CONFIG["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token", "~/.mlflow/credentials": "~/.mlflow/credentials"}
    text = (REPO / "infra" / "cluster" / "aws.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text


def test_the_head_runs_drivers_only():
    assert any("--num-cpus=0" in command for command in CONFIG["head_start_ray_commands"])
    assert CONFIG["setup_commands"] == []  # the image has everything; Ray's default would reinstall Ray
