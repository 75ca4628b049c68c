"""Real clusters for end-to-end tests: `ray start --head` and `mlflow server` on loopback.

Both run in their own process group, on free ports, and are stopped by killing that group, so a
test never touches another Ray on the machine (no `ray stop`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this session: a cluster being started has not
    bound the ports it was given yet, so the OS could offer one of them again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def wait_for_http(url: str, timeout: float, process: subprocess.Popen, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered")
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2)
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_group(process: subprocess.Popen) -> None:
    # A short grace: `ray start --block` takes ~20 s to wind down on SIGTERM, and everything it
    # started is in its process group, which SIGKILL then takes down whole.
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class RayHead:
    dashboard_url: str
    env: dict[str, str]  # what a client needs: auth mode and token path
    address: str  # the GCS address a driver joins with (RAY_ADDRESS)
    headers: dict[str, str] | None = None  # the token, for the job-submission HTTP API

    def submit(self, entrypoint: list[str], *, env_vars: dict[str, str] | None = None, timeout: float = 600) -> str:
        """`ray job submit --working-dir <repo> -- <entrypoint>`; returns the job's output."""
        runtime_env = json.dumps({"env_vars": env_vars or {}})
        command = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard_url, "--working-dir", str(REPO),
                   "--runtime-env-json", runtime_env, "--", *entrypoint]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "succeeded" in output, output[-5000:]
        return output


@contextmanager
def ray_head(tmp_path: Path, *, token_auth: bool, python: Path | None = None, cwd: Path | None = None,
             pod_env: dict[str, str] | None = None):
    """A head node. By default it runs this environment's Ray from ``tmp_path``; a pod's view is
    ``python`` (its environment: workers and job drivers run it too), ``cwd`` (where the image starts
    Ray) and ``pod_env`` (the pod's environment variables)."""
    bin_dir = python.parent if python else BIN
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           **(pod_env or {})}
    env.pop("RAY_ADDRESS", None)
    if token_auth:
        home = tmp_path / "home"
        home.mkdir()
        generated = subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env={**env, "HOME": str(home)},
                                   capture_output=True, text=True, check=True)
        token = generated.stdout.strip().splitlines()[-1]
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(home / ".ray" / "auth_token"))
    else:
        token = None
        env["RAY_AUTH_MODE"] = "disabled"
    dashboard_port, gcs_port = free_port(), free_port()
    # A temp dir of its own: a job driver connects to the cluster that the temp dir's
    # ray_current_cluster file names, which any other `ray start` on the machine would overwrite in
    # the shared /tmp/ray. Short, under /tmp: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-e2e-", dir="/tmp")
    ray = [str(python), "-m", "ray.scripts.scripts"] if python else [str(BIN / "ray")]
    command = [
        *ray, "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
        f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}", "--object-store-memory=500000000",
    ]
    process = subprocess.Popen(command, env=env, cwd=cwd or tmp_path, start_new_session=True,
                               stdout=open(tmp_path / "ray-head.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        wait_for_http(f"{url}/api/version", 120, process, headers)
        yield RayHead(url, env, f"127.0.0.1:{gcs_port}", headers)
    finally:
        stop_jobs(url, headers)
        stop_group(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_jobs(url: str, headers: dict[str, str] | None, grace: float = 30) -> None:
    """Stop jobs still running (a test that failed mid-job): their drivers run in sessions of their
    own, which stopping the head's process group would leave behind."""
    try:
        client = JobSubmissionClient(url, headers=headers)
        running = [job.submission_id for job in client.list_jobs() if not job.status.is_terminal()]
        for job_id in running:
            client.stop_job(job_id)
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            running = [job_id for job_id in running if not client.get_job_status(job_id).is_terminal()]
            time.sleep(1)
    except Exception as error:  # the head may already be gone; nothing is left to stop then
        print(f"could not stop the cluster's jobs: {error}")


@contextmanager
def mlflow_server(tmp_path: Path):
    """The same `mlflow server` the Deployment runs, with a SQLite backend instead of PostgreSQL."""
    port = free_port()
    command = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow-server.db'}",
        "--artifacts-destination", str(tmp_path / "mlflow-artifacts"),
    ]
    process = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                               stdout=open(tmp_path / "mlflow-server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", 120, process)
        yield url
    finally:
        stop_group(process)


@pytest.fixture(scope="session")
def ray_head_with_token(tmp_path_factory):
    """One `ray start --head` with token authentication for every e2e test that submits jobs or
    serves on a plain cluster: a head costs about half a minute to start and stop on two cores.
    (Tests that kill its processes, or need another environment, start their own.)"""
    with ray_head(tmp_path_factory.mktemp("shared-ray"), token_auth=True) as head:
        yield head


@pytest.fixture
def mlflow_url(tmp_path):
    with mlflow_server(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def gpt2_tokens(ray_local, corpus, tmp_path_factory) -> str:
    """Token shards of part of tinyshakespeare with GPT-2's tokenizer (the demo's), for the training
    jobs' tests; built once per session on the session's local Ray."""
    from tests.integration.test_train_loop import build_shakespeare_tokens

    return build_shakespeare_tokens(tmp_path_factory.mktemp("e2e-tokens"), corpus, tokenizer="gpt2", speeches=2000)
