"""`ray job submit` of the dataset build to a `ray start --head` cluster with token auth on."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipeline.demo_crawl import write_demo_crawl

pytestmark = pytest.mark.e2e


def test_build_job_submitted_with_token_auth(ray_head_with_token, mlflow_url, corpus, tmp_path):
    crawl = tmp_path / "crawl"
    write_demo_crawl(crawl)
    output = tmp_path / "datasets" / "demo"
    tokens = tmp_path / "tokens" / "demo"
    job_output = ray_head_with_token.submit(
        ["python", "jobs/build_dataset.py", "--config", "jobs/configs/demo.yaml",
         "--input", str(crawl), "--output", str(output), "--set", "dataset.version=e2e",
         "--set", f"tokenize.output={tokens}"],
        # The job runs from a copy of the repo, so the shared corpus (HellaSwag for decontamination,
        # GPT-2's BPE files) is named explicitly, as a cluster would mount it.
        env_vars={"MLFLOW_TRACKING_URI": mlflow_url, "CORPUS_DIR": str(corpus)},
    )
    manifest = json.loads((output / "e2e" / "manifest.json").read_text())
    assert manifest["documents"] > 50
    assert f"dataset: {output / 'e2e'}" in job_output
    token_manifest = json.loads((tokens / "e2e" / "manifest.json").read_text())
    assert token_manifest["total_tokens"] > 10_000 and f"token shards: {tokens / 'e2e'}" in job_output

    client = mlflow.MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name("dataset-builds")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`dataset.version` = 'e2e'")
    assert run.data.metrics["documents"] == manifest["documents"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "funnel.png", "config.json", "tokens"} <= artifacts
    assert run.data.metrics["tokens.total"] == token_manifest["total_tokens"]
