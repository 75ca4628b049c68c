"""``ray job submit -- python jobs/pretrain.py`` on the demo config, as a user runs it on a cluster:
a ``ray start --head`` with token authentication and an ``mlflow server`` on loopback.

The job succeeds; its one MLflow run holds the metrics, params, dataset input and artifacts; the final
model is registered as a pyfunc; the registered model generates text with ``jobs/generate.py``, and
``mlflow models serve`` answers with the same text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest

from pipeline import tracking
from tests.e2e.conftest import BIN, free_port, stop_group, wait_for_http

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

# The demo config made small enough for a test: 4 steps of 1,024 tokens, short evaluations.
SMALL_DEMO = [
    "run.max_steps=4", "run.log_every_steps=2", "run.eval_every_steps=4", "checkpoint.every_steps=2",
    "batch.global_batch_tokens=1024", "eval.val_batches=2", "eval.hellaswag.limit=8",
    "eval.samples.max_new_tokens=8",
]


def overrides(*pairs: str) -> list[str]:
    return [argument for pair in pairs for argument in ("--set", pair)]


def test_submitted_job_is_tracked_registered_and_generates(ray_head_with_token, mlflow_url, gpt2_tokens, corpus, tmp_path):
    output = ray_head_with_token.submit(
        ["python", "jobs/pretrain.py", "--config", "jobs/configs/pretrain-demo.yaml",
         *overrides(f"data.sources=[{{path: {gpt2_tokens}}}]", f"run.output={tmp_path / 'runs'}", *SMALL_DEMO)],
        env_vars={"MLFLOW_TRACKING_URI": mlflow_url, "CORPUS_DIR": str(corpus)},
    )
    assert "step 4/4 | loss" in output  # the progress line
    assert "finished pretrain-demo" in output
    # The loader's reads run in the workers' CPU budget: nothing waits on a CPU the workers hold.
    assert "Cluster resources are not enough" not in output and "may hang forever" not in output

    client = mlflow.MlflowClient(mlflow_url)
    [run] = client.search_runs([client.get_experiment_by_name("pretraining").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "data_wait_fraction", "val_loss", "val_bpb",
                "skipped_steps",
                "hellaswag_acc", "hellaswag_acc_norm"):
        assert key in metrics, key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4]
    params = run.data.params
    assert params["run.max_steps"] == "4" and params["scaling.num_workers"] == "2"
    assert int(params["model.parameters"]) > 10_000_000
    assert float(params["mfu.assumed_peak_flops_per_worker"]) > 0
    assert params["git_commit"]

    [dataset_input] = run.inputs.dataset_inputs
    manifest = json.loads((Path(gpt2_tokens) / "manifest.json").read_text())
    assert dataset_input.dataset.digest == tracking.manifest_digest(manifest)[:36]
    assert gpt2_tokens in dataset_input.dataset.source

    artifacts = {a.path for folder in ("", "hf", "samples") for a in client.list_artifacts(run.info.run_id, folder)}
    for path in ("config.json", "loss_curve.png", "hf/model.safetensors", "hf/config.json", "samples/step-00000004.txt"):
        assert path in artifacts, path

    # The final model is logged once, as the pyfunc that serves it, and registered.
    [version] = client.search_model_versions("name='webllm-demo'")
    assert version.run_id == run.info.run_id
    # What models:/webllm-demo/<version> resolves to. (mlflow.artifacts.download_artifacts would look
    # the name up in the process's global registry, not in the one given to it.)
    download_uri = client.get_model_version_download_uri("webllm-demo", version.version)
    model_dir = Path(mlflow.artifacts.download_artifacts(download_uri, dst_path=str(tmp_path / "registered"),
                                                         tracking_uri=mlflow_url))
    for path in ("MLmodel", "artifacts/checkpoint/model.safetensors", "artifacts/checkpoint/tokenizer/encoding.json",
                 "code/model/serve/engine.py", "requirements.txt"):
        assert (model_dir / path).is_file(), path
    generated = subprocess.run(
        [sys.executable, "jobs/generate.py", "--checkpoint", str(model_dir), "--prompt", "ROMEO:",
         "--max-new-tokens", "12", "--temperature", "0"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    # Four steps teach the model little beyond Shakespeare's most frequent token, the newline: the
    # continuation may be all whitespace, but it is there (print adds the last "\n").
    assert generated.stdout.removesuffix("\n"), generated.stderr

    # `mlflow models serve` answers predictions from the registry, as the MLflow docs run it.
    with pyfunc_server(f"models:/webllm-demo/{version.version}", mlflow_url, tmp_path) as url:
        body = {"inputs": {"prompt": ["ROMEO:"]}, "params": {"max_tokens": 12, "temperature": 0.0}}
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        [prediction] = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"]
    assert prediction["completion"] == generated.stdout.removesuffix("\n")
    assert prediction["completion_tokens"] >= 1 and prediction["finish_reason"] in {"length", "stop"}


@contextmanager
def pyfunc_server(model_uri: str, tracking_uri: str, tmp_path: Path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=tmp_path, env=env, start_new_session=True, stdout=open(tmp_path / "pyfunc.log", "w"),
        stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", 180, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(process)
