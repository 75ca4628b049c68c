"""The serving configs, checked offline: the Serve config validates with Ray Serve's own schema and
builds our application; the RayService embeds exactly that config, on pods that can hold a replica."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from model.serve.app import OpenAIServer, ServeSettings
from pipeline.config import ConfigError, validate
from tests.unit.test_infra_kuberay import containers, crd_validator, of_kind, quantity

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "infra" / "serve" / "webllm.yaml"


def serve_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def test_the_serve_config_validates_with_ray_serves_schema_and_names_our_app():
    schema = ServeDeploySchema.model_validate(serve_config())
    (app,) = schema.applications
    module, _, name = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module), name)
    assert callable(builder)
    settings = validate(ServeSettings, app.args)
    assert settings.model.startswith("models:/") and settings.api_key_env
    (deployment,) = app.deployments
    assert deployment.name == OpenAIServer.name
    scaling = deployment.autoscaling_config
    assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
    assert scaling["target_ongoing_requests"] <= deployment.max_ongoing_requests


def test_the_settings_reject_what_a_replica_could_not_use():
    args = serve_config()["applications"][0]["args"]
    for bad in ({"max_batch_size": 0}, {"device": "tpu"}, {"unknown": 1}):
        with pytest.raises(ConfigError):
            validate(ServeSettings, {**args, **bad})


def test_the_rayservice_embeds_the_serve_config_and_validates_against_kuberays_schema():
    (service,) = of_kind("RayService")
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == serve_config()
    crd_validator("RayService").validate(service)
    broken = copy.deepcopy(service)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(jsonschema.ValidationError, match="rayStartParam"):
        crd_validator("RayService").validate(broken)


def test_each_serving_pod_holds_a_whole_replica_and_runs_restricted():
    (service,) = of_kind("RayService")
    options = serve_config()["applications"][0]["deployments"][0]["ray_actor_options"]
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["mode"] == "token"
    for group in cluster["workerGroupSpecs"]:
        (container,) = containers(group)
        limits = container["resources"]["limits"]
        assert quantity(limits["cpu"]) >= options["num_cpus"]
        assert int(limits.get("nvidia.com/gpu", 0)) >= options["num_gpus"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        names = {variable["name"]: variable for variable in container["env"]}
        assert names["WEBLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "webllm-api-key"
        assert "MLFLOW_TRACKING_URI" in names
