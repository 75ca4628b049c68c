"""``ray job submit -- python jobs/pretrain.py`` on the demo config, as a user runs it on a cluster:
a ``ray start --head`` with token authentication and an ``mlflow server`` on loopback.

The job succeeds; its one MLflow run holds the metrics, params, dataset input and artifacts; the final
model is registered; and the registered model generates text with ``jobs/generate.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from model import tracking

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

    client = mlflow.MlflowClient(mlflow_url)
    [run] = client.search_runs([client.get_experiment_by_name("pretraining").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "data_wait_fraction", "val_loss",
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

    artifacts = {a.path for folder in ("", "checkpoint", "hf", "samples")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    for path in ("config.json", "loss_curve.png", "checkpoint/model.safetensors", "checkpoint/model.json",
                 "hf/model.safetensors", "hf/config.json", "samples/step-00000004.txt"):
        assert path in artifacts, path

    [version] = client.search_model_versions("name='webllm-demo'")
    assert version.run_id == run.info.run_id
    # What models:/webllm-demo/<version> resolves to. (mlflow.artifacts.download_artifacts would look
    # the name up in the process's global registry, not in the one given to it.)
    download_uri = client.get_model_version_download_uri("webllm-demo", version.version)
    model_dir = mlflow.artifacts.download_artifacts(download_uri, dst_path=str(tmp_path / "registered"),
                                                    tracking_uri=mlflow_url)
    generated = subprocess.run(
        [sys.executable, "jobs/generate.py", "--checkpoint", model_dir, "--prompt", "ROMEO:", "--max-new-tokens", "12",
         "--temperature", "0"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    # Four steps teach the model little beyond Shakespeare's most frequent token, the newline: the
    # continuation may be all whitespace, but it is there (print adds the last "\n").
    assert generated.stdout.removesuffix("\n"), generated.stderr
