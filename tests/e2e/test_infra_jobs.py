"""The deployment, run for real on loopback.

- An MLflow server started with the command the Kubernetes Deployment runs (infra/mlflow/mlflow.yaml),
  PostgreSQL swapped for SQLite and S3 for a folder, basic-auth included.
- Every RayJob and RayCronJob entrypoint in infra/kuberay, submitted with `ray job submit` to a
  `ray start --head` cluster with token auth (as KubeRay runs it), the demo config in place of the
  cluster one. A spec naming a script or config that does not exist fails here.
- Each job reports to that server over HTTP, as a user of its own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import requests
import yaml

from tests.e2e.conftest import BIN, REPO, free_port, ray_head, stop_group, wait_for_http
from tests.e2e.test_pretrain_job import SMALL_DEMO
from tests.integration.test_train_loop import build_shakespeare_tokens

pytestmark = pytest.mark.e2e

KUBERAY = REPO / "infra" / "kuberay"
MLFLOW = REPO / "infra" / "mlflow"
ENTRYPOINT = re.compile(r"python (jobs/[a-z_]+\.py) --config (jobs/configs/[\w.-]+\.yaml)")


@dataclass(frozen=True)
class DemoRun:
    """How a job runs here, small and quick: its demo config, and arguments pointing it at small data
    made by the named fixtures (requested only for the jobs that need them)."""

    config: str
    args: Callable[..., list[str]]  # (work folder, **fixtures) -> extra arguments
    fixtures: tuple[str, ...] = ("corpus",)


def crawl_folder(work: Path, corpus: Path) -> list[str]:
    folder = work / "crawl"
    folder.mkdir()
    shutil.copy(corpus / "web" / "warc" / "crawl-sample-0000.warc.gz", folder)
    return ["--input", str(folder), "--output", str(work / "web"), "--set", f"tokenize.output={work / 'tokens'}"]


def few_steps(work: Path, corpus: Path) -> list[str]:
    return ["--set", f"run.output={work / 'runs'}", "--set", "run.max_steps=2"]


def small_pretrain(work: Path, corpus: Path, demo_tokens: str) -> list[str]:
    settings = [f"data.sources=[{{path: {demo_tokens}}}]", f"run.output={work / 'runs'}", *SMALL_DEMO]
    return [argument for setting in settings for argument in ("--set", setting)]


DEMO_RUNS = {
    "jobs/build_dataset.py": DemoRun("jobs/configs/demo.yaml", crawl_folder),
    "jobs/rebuild_dataset.py": DemoRun("jobs/configs/demo.yaml", crawl_folder),
    "jobs/pretrain.py": DemoRun("jobs/configs/pretrain-demo.yaml", small_pretrain, ("corpus", "demo_tokens")),
    "jobs/finetune_classifier.py": DemoRun("jobs/configs/finetune-classifier-demo.yaml", few_steps),
    "jobs/finetune_instruct.py": DemoRun("jobs/configs/finetune-instruct-demo.yaml", few_steps),
}


@pytest.fixture(scope="module")
def demo_tokens(ray_local, corpus, tmp_path_factory) -> str:
    """Token shards for the pretraining demo: part of tinyshakespeare with GPT-2's tokenizer."""
    return build_shakespeare_tokens(tmp_path_factory.mktemp("tokens"), corpus, tokenizer="gpt2", speeches=2000)


def job_specs() -> list:
    specs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "RayJob":
                specs.append(pytest.param(doc["spec"]["entrypoint"], id=path.stem))
            elif doc["kind"] == "RayCronJob":
                specs.append(pytest.param(doc["spec"]["jobTemplate"]["entrypoint"], id=path.stem))
    return specs


@dataclass(frozen=True)
class MlflowServer:
    url: str
    admin: tuple[str, str]
    jobs: tuple[str, str]

    def api(self, method: str, path: str, auth: tuple[str, str] | None, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", auth=auth, timeout=120, **kwargs)

    def run_count(self) -> int:
        experiments = self.api("GET", "experiments/search", self.admin, params={"max_results": 1000}).json()
        ids = [e["experiment_id"] for e in experiments["experiments"]]
        runs = self.api("POST", "runs/search", self.admin, json={"experiment_ids": ids, "max_results": 1000}).json()
        return len(runs.get("runs", []))


def deployment_command(folder: Path, port: int) -> list[str]:
    """The Deployment's `mlflow server` command, with loopback, SQLite and a local folder swapped in."""
    for doc in yaml.safe_load_all((MLFLOW / "mlflow.yaml").read_text()):
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
    swaps = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination": str(folder / "artifacts"),
    }
    command = [str(BIN / container["command"][0]), *container["command"][1:]]
    for arg in container["args"]:
        option = arg.split("=", 1)[0]
        command.append(f"{option}={swaps[option]}" if option in swaps else arg)
    assert all(any(arg.startswith(f"{option}=") for arg in command) for option in swaps), command
    return command


@pytest.fixture(scope="module")
def mlflow_deployment(tmp_path_factory):
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("the basic-auth app needs Flask-WTF (mlflow[auth]) in the test environment")
    folder = tmp_path_factory.mktemp("mlflow")
    ini = (MLFLOW / "basic_auth.ini").read_text()
    ini = re.sub(r"(?m)^database_uri = .*$", f"database_uri = sqlite:///{folder / 'auth.db'}", ini)
    (folder / "basic_auth.ini").write_text(ini)
    admin = ("admin", secrets.token_hex(12))
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    port = free_port()
    process = subprocess.Popen(deployment_command(folder, port), cwd=folder, env=env, start_new_session=True,
                               stdout=open(folder / "mlflow-server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", 240, process)
        jobs = ("webllm-jobs", secrets.token_hex(12))
        created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=admin, timeout=120,
                                json={"username": jobs[0], "password": jobs[1]})
        assert created.status_code == 200, created.text
        yield MlflowServer(url, admin, jobs)
    finally:
        stop_group(process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One `ray start --head` with token auth for every job of the module."""
    with ray_head(tmp_path_factory.mktemp("ray"), token_auth=True) as head:
        yield head


def test_the_mlflow_server_admits_only_its_users(mlflow_deployment):
    assert mlflow_deployment.api("GET", "experiments/search", None, params={"max_results": 1}).status_code == 401
    intruder = (mlflow_deployment.jobs[0], "wrong-password")
    assert mlflow_deployment.api("GET", "experiments/search", intruder, params={"max_results": 1}).status_code == 401
    assert mlflow_deployment.api("GET", "experiments/search", mlflow_deployment.jobs, params={"max_results": 1}).ok


@pytest.mark.parametrize("entrypoint", job_specs())
def test_job_spec_runs_on_a_ray_cluster_and_reports_to_mlflow(entrypoint, cluster, mlflow_deployment, corpus,
                                                               request, tmp_path):
    script, config = ENTRYPOINT.fullmatch(entrypoint).groups()
    assert (REPO / script).is_file(), f"the spec runs {script}, which does not exist"
    assert (REPO / config).is_file(), f"the spec reads {config}, which does not exist"
    demo = DEMO_RUNS[script]
    arguments = demo.args(tmp_path, **{name: request.getfixturevalue(name) for name in demo.fixtures})
    runs_before = mlflow_deployment.run_count()

    username, password = mlflow_deployment.jobs
    cluster.submit(
        ["python", script, "--config", demo.config, *arguments],
        env_vars={"MLFLOW_TRACKING_URI": mlflow_deployment.url, "MLFLOW_TRACKING_USERNAME": username,
                  "MLFLOW_TRACKING_PASSWORD": password, "CORPUS_DIR": str(corpus)},
    )
    assert mlflow_deployment.run_count() > runs_before
