"""``ray job submit`` of both fine-tuning jobs on their demo configs, as a user runs them on a
cluster: a ``ray start --head`` with token authentication and an ``mlflow server`` on loopback.

The base model is a tiny random GPT saved where a pretraining run would have written it, and a
pretraining MLflow run names that place: each fine-tune's run must name both (the lineage), and
hold its metrics and artifacts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest

from tests.integration.test_finetune_resume import save_tiny_base

pytestmark = pytest.mark.e2e


def overrides(*pairs: str) -> list[str]:
    return [argument for pair in pairs for argument in ("--set", pair)]


@pytest.fixture
def pretrained(tmp_path, mlflow_url) -> tuple[Path, str]:
    """(a pretraining run's folder holding one checkpoint, the MLflow run that names it)."""
    output = tmp_path / "pretrain-runs"
    save_tiny_base(output / "tiny-pretrain" / "checkpoint-00000010" / "model")
    client = mlflow.MlflowClient(mlflow_url)
    run = client.create_run(client.create_experiment("pretraining"), run_name="tiny-pretrain")
    client.log_param(run.info.run_id, "run.name", "tiny-pretrain")
    client.log_param(run.info.run_id, "run.output", str(output))
    client.set_terminated(run.info.run_id)
    return output / "tiny-pretrain", run.info.run_id


def test_both_finetune_jobs_run_under_ray_job_submit_and_are_tracked(ray_head_with_token, mlflow_url, pretrained,
                                                                       corpus, tmp_path):
    run_folder, pretrain_run_id = pretrained
    env_vars = {"MLFLOW_TRACKING_URI": mlflow_url, "CORPUS_DIR": str(corpus)}
    common = [f"model.init_from={run_folder}", f"run.output={tmp_path / 'runs'}", "run.max_steps=4",
              "run.log_every_steps=2", "run.eval_every_steps=2", "checkpoint.every_steps=2"]
    classified = ray_head_with_token.submit(
        ["python", "jobs/finetune_classifier.py", "--config", "jobs/configs/finetune-classifier-demo.yaml",
         *overrides(*common, "eval.max_examples=32")], env_vars=env_vars)
    assert "finished finetune-classifier-demo: train_accuracy" in classified
    instructed = ray_head_with_token.submit(
        ["python", "jobs/finetune_instruct.py", "--config", "jobs/configs/finetune-instruct-demo.yaml",
         *overrides(*common, "eval.val_examples=8", "eval.test_examples=3", "eval.max_new_tokens=8",
                    "trainable.lora.enabled=true")],
        env_vars=env_vars)
    assert "scoring of the test responses skipped" in instructed

    client = mlflow.MlflowClient(mlflow_url)
    runs = {run.info.run_name: run for run in
            client.search_runs([client.get_experiment_by_name("finetuning").experiment_id])}
    assert set(runs) == {"finetune-classifier-demo", "finetune-instruct-demo"}
    checkpoint = str(run_folder / "checkpoint-00000010" / "model")
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.params["base.checkpoint"] == checkpoint
        assert run.data.params["base.mlflow_run_id"] == pretrain_run_id
        assert run.inputs.dataset_inputs  # the fine-tuning file, with its digest

    classifier = runs["finetune-classifier-demo"]
    for split in ("train", "val", "test"):
        for metric in ("accuracy", "precision", "recall", "f1"):
            assert 0 <= classifier.data.metrics[f"{split}_{metric}"] <= 1
    assert int(classifier.data.params["model.trainable_parameters"]) == int(classifier.data.params["model.parameters"])
    # checkpoint.keep_best: val_accuracy: the model kept is the best evaluation's, not the last one's.
    exported = int(re.search(r"classifier checkpoint: .*/checkpoint-(\d+)/model", classified).group(1))
    accuracy = {}  # each evaluation's; the final report logs its own figures at the last step afterwards
    for m in sorted(client.get_metric_history(classifier.info.run_id, "val_accuracy"), key=lambda m: m.timestamp):
        accuracy.setdefault(m.step, m.value)
    assert set(accuracy) == {2, 4} and accuracy[exported] == max(accuracy.values()), (exported, accuracy)
    artifacts = {a.path for folder in ("", "checkpoint", "evaluation")
                 for a in client.list_artifacts(classifier.info.run_id, folder)}
    for path in ("checkpoint/model.json", "checkpoint/finetune.json", "evaluation/confusion_train.png",
                 "evaluation/confusion_val.png", "evaluation/confusion_test.png", "loss_curve.png"):
        assert path in artifacts, path

    instruct = runs["finetune-instruct-demo"]
    assert [m.step for m in client.get_metric_history(instruct.info.run_id, "val_loss")] == [2, 4]
    assert int(instruct.data.params["model.trainable_parameters"]) < int(instruct.data.params["model.parameters"]) / 10
    responses_file = mlflow.artifacts.download_artifacts(run_id=instruct.info.run_id,
                                                         artifact_path="responses/test_responses.json",
                                                         dst_path=str(tmp_path / "downloaded"), tracking_uri=mlflow_url)
    responses = json.loads(Path(responses_file).read_text())
    assert len(responses) == 3
    assert all({"instruction", "output", "model_response"} <= set(entry) for entry in responses)
    assert "merged/model.json" in {a.path for a in client.list_artifacts(instruct.info.run_id, "merged")}
