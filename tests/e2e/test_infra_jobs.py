"""The deployment, run for real on loopback.

- An MLflow server started with the command the Kubernetes Deployment runs (infra/mlflow/mlflow.yaml),
  PostgreSQL swapped for SQLite and S3 for a folder, basic-auth included.
- Every RayJob and RayCronJob entry point in infra/kuberay, started the way KubeRay's HTTP mode
  starts it: the job-submission API gets the manifest's entry point and nothing else (no working
  dir), on a `ray start --head` with token auth that runs like the image's head pod:
  - the project installed (not editable) in an environment of its own, and its jobs/ copied to
    what stands for /home/ray/webllm, where the image starts Ray (infra/docker/Dockerfile);
  - the pod's environment variables from the RayCluster manifest, with local stand-ins for what
    only a cluster has: the MLflow Service, the bucket behind WEBLLM_STORAGE (a folder), the
    corpus volume behind CORPUS_DIR (the shared corpus), the MLflow user's Secret.
  The production configs run as the cluster runs them, with overrides that fit two CPU cores.
  They chain as on a cluster: the build's token shards are what pretraining reads, its run is what
  the two fine-tunes start from.
- Each job reports to that server over HTTP, as a user of its own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import requests
import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.e2e.conftest import BIN, REPO, free_port, ray_head, stop_group, wait_for_http

pytestmark = pytest.mark.e2e

KUBERAY = REPO / "infra" / "kuberay"
MLFLOW = REPO / "infra" / "mlflow"
ENTRYPOINT = re.compile(r"python (jobs/[a-z_]+\.py) --config (jobs/configs/[\w.-]+\.yaml)")
# What the Dockerfile copies into the image's working folder.
IMAGE_FILES = ("pyproject.toml", "requirements.lock", "README.md", "pipeline", "model", "jobs")


@dataclass(frozen=True)
class SmallRun:
    """What the cluster runs, made to fit two CPU cores: overrides appended to the entry point, and
    what lands in the storage first (``prepare(storage, corpus)``)."""

    overrides: tuple[str, ...]
    prepare: Callable[[Path, Path], None] = lambda storage, corpus: None


def land_crawl(name: str) -> Callable[[Path, Path], None]:
    """A crawl file arriving in the bucket's crawl folder, as the scheduled rebuild expects them."""
    def prepare(storage: Path, corpus: Path) -> None:
        (storage / "crawl").mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / "web" / "warc" / name, storage / "crawl")
    return prepare


ON_CPU = ("scaling.use_gpu=false", "scaling.num_workers=1", "scaling.cpus_per_worker=1", "run.max_steps=2", "run.eval_every_steps=2",
          "checkpoint.every_steps=2")
# A fifth of the few documents to validation, so the pretraining that reads them has some.
SMALL_BUILD = ("compute.stage_workers=2", "compute.batch_size=64", "tokenize.encode_workers=1",
               "tokenize.val_fraction=0.2")
SMALL_RUNS = {
    "jobs/build_dataset.py": SmallRun(SMALL_BUILD, land_crawl("crawl-sample-0000.warc.gz")),
    "jobs/rebuild_dataset.py": SmallRun(SMALL_BUILD, land_crawl("crawl-sample-0001.warc.gz")),
    "jobs/pretrain.py": SmallRun(
        ("model.preset=small-cpu", "scaling.use_gpu=false", "scaling.num_workers=2", "scaling.cpus_per_worker=0.5",
         "parallel.precision=auto", "parallel.compile=false", "run.max_steps=2", "run.log_every_steps=1",
         "run.eval_every_steps=2", "checkpoint.every_steps=2", "batch.global_batch_tokens=2048",
         "batch.micro_batch_size=1", "data.val_sequences=2", "eval.val_batches=1", "eval.hellaswag.limit=4",
         "eval.samples.max_new_tokens=4")),
    "jobs/finetune_classifier.py": SmallRun((*ON_CPU, "eval.max_examples=16")),
    "jobs/finetune_instruct.py": SmallRun((*ON_CPU, "eval.val_examples=4", "eval.test_examples=2",
                                           "eval.max_new_tokens=4")),
}


def job_specs() -> dict[str, str]:
    """Every RayJob and RayCronJob entry point, by the file that holds it."""
    specs = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "RayJob":
                specs[path.stem] = doc["spec"]["entrypoint"]
            elif doc["kind"] == "RayCronJob":
                specs[path.stem] = doc["spec"]["jobTemplate"]["entrypoint"]
    return specs


# In the order a cluster's first week runs them: each job reads what the one before it wrote.
CHAIN = ["rayjob-build-dataset", "raycronjob-rebuild-dataset", "rayjob-pretrain", "rayjob-finetune-classifier",
         "rayjob-finetune-instruct"]


def head_pod_environment() -> dict[str, str]:
    (cluster,) = [doc for doc in yaml.safe_load_all((KUBERAY / "raycluster.yaml").read_text())]
    (container,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    return {variable["name"]: variable["value"] for variable in container["env"] if "value" in variable}


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
def image(tmp_path_factory) -> tuple[Path, Path]:
    """(the Python the image's Ray runs, the image's working folder): the project installed as the
    Dockerfile installs it, its dependencies taken from this environment, jobs/ beside it."""
    root = tmp_path_factory.mktemp("image")
    workdir = root / "home" / "ray" / "webllm"
    workdir.mkdir(parents=True)
    for name in IMAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, workdir / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # This environment's packages, but not its editable install of the project: .pth files in a
    # folder named by a .pth file are not read, so the checkout stays out of the image's path.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(workdir)],
                   check=True, capture_output=True)
    shutil.rmtree(workdir / "pipeline")  # the image keeps them too, but the jobs must not need them here
    shutil.rmtree(workdir / "model")
    return python, workdir


@dataclass(frozen=True)
class Cluster:
    client: JobSubmissionClient
    storage: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, image, mlflow_deployment, corpus):
    """One head for the whole chain, running as the head pod runs."""
    python, workdir = image
    storage = tmp_path_factory.mktemp("bucket")
    stand_ins = {"MLFLOW_TRACKING_URI": mlflow_deployment.url, "WEBLLM_STORAGE": str(storage),
                 "CORPUS_DIR": str(corpus)}
    pod_env = head_pod_environment()
    assert stand_ins.keys() <= pod_env.keys(), "the manifest no longer sets what the jobs need"
    username, password = mlflow_deployment.jobs
    pod_env.update(stand_ins, MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password)
    with ray_head(tmp_path_factory.mktemp("ray"), token_auth=True, python=python, cwd=workdir,
                  pod_env=pod_env) as head:
        yield Cluster(JobSubmissionClient(head.dashboard_url, headers=head.headers), storage)


def test_the_mlflow_server_admits_only_its_users(mlflow_deployment):
    assert mlflow_deployment.api("GET", "experiments/search", None, params={"max_results": 1}).status_code == 401
    intruder = (mlflow_deployment.jobs[0], "wrong-password")
    assert mlflow_deployment.api("GET", "experiments/search", intruder, params={"max_results": 1}).status_code == 401
    assert mlflow_deployment.api("GET", "experiments/search", mlflow_deployment.jobs, params={"max_results": 1}).ok


def test_the_chain_covers_every_job_spec():
    assert sorted(CHAIN) == sorted(job_specs())


@pytest.mark.parametrize("name", CHAIN)
def test_job_spec_runs_as_kuberay_starts_it_and_reports_to_mlflow(name, cluster, mlflow_deployment, corpus):
    entrypoint = job_specs()[name]
    script, config = ENTRYPOINT.fullmatch(entrypoint).groups()
    assert (REPO / script).is_file() and (REPO / config).is_file(), entrypoint
    small = SMALL_RUNS[script]
    small.prepare(cluster.storage, corpus)
    overrides = [argument for override in small.overrides for argument in ("--set", override)]
    runs_before = mlflow_deployment.run_count()

    # KubeRay's HTTP mode: the entry point alone, no runtime environment.
    job = cluster.client.submit_job(entrypoint=f"{entrypoint} {shlex.join(overrides)}")
    deadline = time.monotonic() + 900
    while not (status := cluster.client.get_job_status(job)).is_terminal():
        assert time.monotonic() < deadline, f"{name} did not finish"
        time.sleep(2)
    logs = cluster.client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    assert mlflow_deployment.run_count() > runs_before, logs[-3000:]
