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


def registry() -> str:
    return CONFIG["docker"]["image"].rsplit("/", 1)[0]


def test_nodes_run_the_project_images_and_gpu_types_get_the_gpu_image():
    assert CONFIG["docker"]["image"] == f"{registry()}/webllm:{VERSION}-cpu"
    gpu_types = {name: spec for name, spec in CONFIG["available_node_types"].items() if name.startswith("gpu")}
    assert len(gpu_types) >= 2
    for spec in gpu_types.values():
        assert spec["docker"]["worker_image"] == f"{registry()}/webllm:{VERSION}-gpu"
        assert "--gpus all" in spec["docker"]["worker_run_options"]
        assert spec["min_workers"] == 0 < spec["max_workers"]


def test_token_auth_and_credentials_come_from_the_launching_machine():
    assert "--env RAY_AUTH_MODE=token" in CONFIG["docker"]["run_options"]
    assert CONFIG["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token", "~/.mlflow/credentials": "~/.mlflow/credentials"}
    text = (REPO / "infra" / "cluster" / "aws.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text


def test_the_head_runs_drivers_only():
    assert any("--num-cpus=0" in command for command in CONFIG["head_start_ray_commands"])
    # The image has everything, the autoscaler's boto3 included: nothing is pip-installed over it.
    assert CONFIG["setup_commands"] == [] and CONFIG["head_setup_commands"] == []


def test_every_node_names_its_image_and_workers_their_instance_profile():
    """Without an ImageId the launcher falls back to an old default AMI; without an instance
    profile a worker cannot read s3:// data or pull from the registry."""
    for name, spec in CONFIG["available_node_types"].items():
        node = spec["node_config"]
        assert node["ImageId"].startswith(("ami-", "resolve:ssm:")), name
        if name != CONFIG["head_node_type"]:
            assert node["IamInstanceProfile"]["Name"], name


def test_hosts_log_in_to_the_registry_the_images_come_from():
    (login,) = CONFIG["initialization_commands"]
    assert "docker login" in login and login.rstrip().endswith(registry())
    assert f"--region {CONFIG['provider']['region']}" in login


def test_the_autoscalers_boto3_fits_the_botocore_that_s3fs_needs():
    """The lock pins one botocore for both: boto3's range and aiobotocore's must both contain it."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    pins = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().splitlines()
                if "==" in line)
    for package in ("boto3", "aiobotocore"):
        assert version(package) == pins[package]
        (botocore,) = [Requirement(r) for r in requires(package) if Requirement(r).name == "botocore" and not
                       Requirement(r).marker]
        assert botocore.specifier.contains(pins["botocore"]), (package, str(botocore.specifier))
