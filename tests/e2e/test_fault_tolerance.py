"""A worker process killed in the middle of a 2-worker run: Ray Train restarts the workers from the
last checkpoint, the run finishes all its steps in the same MLflow run, and its final weights are
those of a run that was never interrupted.

The kill is real: the worker's pid comes from Ray's state API and gets SIGKILL, as an OOM killer or
a lost node would deliver it; nothing in the training code is told about it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import ray.train
import torch
from ray.util.state import list_actors
from safetensors.torch import load_file

from tests.e2e.conftest import REPO, ray_head
from tests.e2e.test_pretrain_job import overrides

pytestmark = pytest.mark.e2e

STEPS, EVERY = 10, 5


def pretrain_command(tokens: str, output: Path, name: str, *extra: str) -> list[str]:
    return [
        "python", "jobs/pretrain.py", "--config", "jobs/configs/pretrain-tinyshakespeare.yaml",
        *overrides(
            f"data.sources=[{{path: {tokens}}}]", f"run.output={output}", f"run.name={name}",
            "model.overrides={}", f"run.max_steps={STEPS}", f"run.eval_every_steps={STEPS}",
            f"checkpoint.every_steps={EVERY}", "eval.val_batches=2", "eval.samples.prompts=[]",
            "batch.global_batch_size=16", "batch.micro_batch_size=4", "scaling.max_failures=2", *extra,
        ),
    ]


def registered_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints Ray Train has committed (every worker reported), from the run folder's state."""
    try:
        result = ray.train.Result.from_path(str(run_dir))
    except (RuntimeError, ValueError):  # no state written yet, or being written
        return []
    return [Path(checkpoint.path).name for checkpoint, _ in result.best_checkpoints]


def kill_a_worker_after_first_checkpoint(dashboard_url: str, run_dir: Path, job: Future, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while not registered_checkpoints(run_dir):
        if job.done():  # it ended before its first checkpoint: show why
            pytest.fail(f"the job ended before its first checkpoint:\n{job.result()[-3000:]}")
        assert time.monotonic() < deadline, f"no checkpoint was committed in {run_dir}"
        time.sleep(0.2)
    workers = list_actors(address=dashboard_url, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert len(workers) == 2
    victim = max(worker.pid for worker in workers)
    os.kill(victim, signal.SIGKILL)
    return victim


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """One head for both tests; the state API takes its server from RAY_API_SERVER_ADDRESS or
    RAY_ADDRESS before the address it is given: point it at this cluster, whatever the environment says."""
    with ray_head(tmp_path_factory.mktemp("fault-head"), token_auth=False) as started:
        previous = os.environ.get("RAY_API_SERVER_ADDRESS")
        os.environ["RAY_API_SERVER_ADDRESS"] = started.dashboard_url
        try:
            yield started
        finally:
            if previous is None:
                os.environ.pop("RAY_API_SERVER_ADDRESS", None)
            else:
                os.environ["RAY_API_SERVER_ADDRESS"] = previous


def test_killed_worker_resumes_from_checkpoint_and_ends_like_an_uninterrupted_run(head, gpt2_tokens, corpus, tmp_path):
    tracking_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env_vars = {"MLFLOW_TRACKING_URI": tracking_db, "CORPUS_DIR": str(corpus)}
    output = tmp_path / "runs"
    with ThreadPoolExecutor(max_workers=1) as pool:  # `ray job submit` waits for the job to end
        killed_job = pool.submit(head.submit, pretrain_command(gpt2_tokens, output, "killed"), env_vars=env_vars)
        kill_a_worker_after_first_checkpoint(head.dashboard_url, output / "killed", killed_job)
        killed_log = killed_job.result()
    # Only its weights are compared: no MLflow run.
    reference_log = head.submit(pretrain_command(gpt2_tokens, output, "reference", "tracking.enabled=false"),
                                env_vars=env_vars)

    resumed_at = [int(step) for step in re.findall(r"resumed from step (\d+)", killed_log)]
    assert resumed_at and resumed_at[0] >= EVERY and resumed_at[0] % EVERY == 0, killed_log[-3000:]
    assert "resumed from step" not in reference_log
    assert f"step {STEPS}/{STEPS} | loss" in killed_log

    killed = load_file(output / "killed" / f"checkpoint-{STEPS:08d}" / "model" / "model.safetensors")
    reference = load_file(output / "reference" / f"checkpoint-{STEPS:08d}" / "model" / "model.safetensors")
    assert killed.keys() == reference.keys()
    for name in killed:
        torch.testing.assert_close(killed[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)

    # One MLflow run for the killed job, continued by the restarted workers up to the last step.
    client = mlflow.MlflowClient(tracking_db)
    runs = client.search_runs([client.get_experiment_by_name("pretraining").experiment_id],
                              filter_string="tags.job = 'killed'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert max(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")) == STEPS


def test_a_rerun_driver_continues_its_mlflow_run(head, gpt2_tokens, corpus, tmp_path):
    """The driver itself killed mid-run (SIGKILL to its process group), then the same command run
    again: Ray Train continues from the last checkpoint, and so does the one MLflow run."""
    tracking_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **head.env, "RAY_ADDRESS": head.address, "MLFLOW_TRACKING_URI": tracking_db,
           "CORPUS_DIR": str(corpus)}
    output = tmp_path / "runs"
    steps = 2 * EVERY  # killed after its first checkpoint, rerun for the rest
    command = [sys.executable, *pretrain_command(gpt2_tokens, output, "rerun", "run.log_every_steps=1",
                                                 f"run.max_steps={steps}", f"run.eval_every_steps={steps}")[1:]]
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 600
    while not registered_checkpoints(output / "rerun"):
        assert driver.poll() is None, "the driver ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint was committed"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    resumed_at = int(re.findall(r"resumed from step (\d+)", rerun.stdout)[0])

    client = mlflow.MlflowClient(tracking_db)
    runs = client.search_runs([client.get_experiment_by_name("pretraining").experiment_id],
                              filter_string="tags.job = 'rerun'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["run.max_steps"] == str(steps) and run.data.params["git_commit"]
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    # Every step once, but those the killed driver ran after its last checkpoint, which are run again.
    assert sorted(set(logged)) == list(range(1, steps + 1))
    assert all(step > resumed_at for step in logged if logged.count(step) > 1)
    assert len(client.search_model_versions(f"run_id = '{run.info.run_id}'")) == 1
