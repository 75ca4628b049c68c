"""The MLflow server's two deployments agree: Kubernetes (mlflow.yaml, postgres.yaml) and the
single-host docker-compose.yml run the same server, with the same auth config, and neither
holds a credential."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MLFLOW = REPO / "infra" / "mlflow"
COMPOSE = yaml.safe_load((MLFLOW / "docker-compose.yml").read_text())


def kubernetes(kind: str, name: str) -> dict:
    for path in (MLFLOW / "mlflow.yaml", MLFLOW / "postgres.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if (doc["kind"], doc["metadata"]["name"]) == (kind, name):
                return doc
    raise LookupError(f"no {kind} {name}")


def server_container() -> dict:
    (container,) = kubernetes("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    return container


def without_allowed_hosts(command: list[str]) -> list[str]:
    return [arg for arg in command if not arg.startswith("--allowed-hosts=")]


def test_compose_runs_the_deployments_server_command():
    container = server_container()
    assert without_allowed_hosts(COMPOSE["services"]["mlflow"]["command"]) == without_allowed_hosts(
        container["command"] + container["args"]
    )
    assert "--app-name=basic-auth" in container["args"]


def test_both_use_the_one_auth_config_and_it_holds_no_password():
    container = server_container()
    config_path = next(v["value"] for v in container["env"] if v["name"] == "MLFLOW_AUTH_CONFIG_PATH")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_path.rsplit("/", 1)[0]]
    assert config_path == f"{mount['mountPath']}/basic_auth.ini"
    kustomization = yaml.safe_load((MLFLOW / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if "basic_auth.ini" in g["files"]]
    volumes = kubernetes("Deployment", "mlflow")["spec"]["template"]["spec"]["volumes"]
    assert {"name": mount["name"], "configMap": {"name": generator["name"]}} in volumes
    assert f"./basic_auth.ini:{config_path}:ro" in COMPOSE["services"]["mlflow"]["volumes"]

    ini = configparser.ConfigParser()
    ini.read(MLFLOW / "basic_auth.ini")
    assert "admin_password" not in ini["mlflow"]
    assert re.fullmatch(r"postgresql://\w+@postgres:5432/(\w+)", ini["mlflow"]["database_uri"])


def database_uris() -> list[str]:
    ini = configparser.ConfigParser()
    ini.read(MLFLOW / "basic_auth.ini")
    container = server_container()
    backend = next(a for a in container["args"] if a.startswith("--backend-store-uri=")).split("=", 1)[1]
    return [backend, ini["mlflow"]["database_uri"]]


def test_mlflow_signs_in_as_an_unprivileged_role_that_owns_its_two_databases():
    init = (MLFLOW / "postgres-init.sh").read_text()
    (role,) = {re.fullmatch(r"postgresql://(\w+)@postgres:5432/\w+", uri).group(1) for uri in database_uris()}
    assert f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in init
    for uri in database_uris():
        assert f"CREATE DATABASE {uri.rsplit('/', 1)[1]} OWNER {role};" in init
    (container,) = kubernetes("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"]
    environment = {v["name"]: v for v in container["env"]}
    assert environment["POSTGRES_USER"]["value"] != role  # the image makes POSTGRES_USER a superuser
    assert environment["POSTGRES_PASSWORD"]["valueFrom"] != environment["MLFLOW_DB_PASSWORD"]["valueFrom"]
    assert COMPOSE["services"]["postgres"]["environment"]["POSTGRES_USER"] != role


def test_postgres_is_the_same_on_both():
    (container,) = kubernetes("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"]
    assert COMPOSE["services"]["postgres"]["image"] == container["image"]
    environment = {v["name"]: v.get("value") for v in container["env"]}
    assert set(environment) - {"PGDATA"} == set(COMPOSE["services"]["postgres"]["environment"])
    assert environment["POSTGRES_USER"] == COMPOSE["services"]["postgres"]["environment"]["POSTGRES_USER"]


def test_compose_publishes_mlflow_on_loopback_only_and_uses_no_root_credentials():
    assert COMPOSE["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    for service in COMPOSE["services"].values():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", []))
    mlflow = COMPOSE["services"]["mlflow"]["environment"]
    assert "MINIO_ROOT_PASSWORD" not in mlflow["AWS_SECRET_ACCESS_KEY"]
    assert mlflow["AWS_ACCESS_KEY_ID"] != COMPOSE["services"]["minio"]["environment"]["MINIO_ROOT_USER"]
    policy = json.loads((MLFLOW / "minio-mlflow-policy.json").read_text())
    resources = {resource for statement in policy["Statement"] for resource in statement["Resource"]}
    assert resources == {"arn:aws:s3:::webllm-mlflow", "arn:aws:s3:::webllm-mlflow/*"}
    assert (REPO / ".gitignore").read_text().count("\n.env\n") == 1


def test_compose_takes_every_secret_from_the_env_file():
    secret_looking = re.compile(r"PASSWORD|SECRET")
    for service in COMPOSE["services"].values():
        for name, value in service.get("environment", {}).items():
            if secret_looking.search(name):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name} must come from .env"


def test_the_bucket_compose_creates_is_the_artifact_destination():
    container = server_container()
    destination = next(a for a in container["args"] if a.startswith("--artifacts-destination="))
    bucket = re.fullmatch(r"--artifacts-destination=s3://([\w-]+)/.*", destination).group(1)
    assert f"local/{bucket}" in " ".join(COMPOSE["services"]["minio-bucket"]["command"])
