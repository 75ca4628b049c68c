"""``jobs/generate_batch.py`` on a local Ray: every input row comes out once, completed as the
engine completes it alone, or scored; bad rows keep their place and are counted; the output is
committed with a manifest and the run is in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import generate_batch
from model.generate import generate
from model.serve.scoring import DocumentScorer
from tests.unit.test_serve_scoring import served  # noqa: F401 - the shared small model fixture

pytestmark = pytest.mark.integration

PROMPTS = ["Hello there", "Once upon a time", None, "x " * 40, "The best way to", "A", "In 1842,", "Why"]


def run_job(tmp_path: Path, *arguments: str) -> int:
    return generate_batch.main([*arguments, "--batch-rows", "3", "--workers", "2"])


def output_rows(folder: Path) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = [row for part in manifest["parts"] for row in pq.read_table(folder / part["path"]).to_pylist()]
    return sorted(rows, key=lambda row: row["id"])


def test_completions_of_every_row_committed_with_a_manifest(ray_local, served, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": index, "prompt": prompt}) + "\n" for index, prompt in enumerate(PROMPTS)))
    output = tmp_path / "completions"
    assert run_job(tmp_path, "--model", str(served.folder), "--input", str(source), "--output", str(output),
                   "--temperature", "0", "--max-tokens", "5") == 0

    rows = output_rows(output)
    assert [row["id"] for row in rows] == list(range(len(PROMPTS)))
    for row in rows:
        if row["error_code"] is None:
            expected = generate(served.model, [served.encode(row["prompt"])], 5, temperature=0,
                                stop_token=served.end_of_text)[0]
            assert row["completion"] == served.encoding.decode(expected)
    assert [rows[2]["error_code"], rows[3]["error_code"]] == ["missing_prompt", "context_length_exceeded"]

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["rows"] == len(PROMPTS) and sum(part["rows"] for part in manifest["parts"]) == len(PROMPTS)
    assert {part["path"] for part in manifest["parts"]} == {f["path"] for f in manifest["files"]}
    assert manifest["errors"] == {"context_length_exceeded": 1, "missing_prompt": 1}
    assert manifest["completion_tokens"] == sum(row["completion_tokens"] for row in rows)
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("batch-inference").experiment_id])
    assert run.data.metrics["rows"] == len(PROMPTS) and run.data.metrics["errors"] == 2

    # A second run over a complete output does nothing.
    assert run_job(tmp_path, "--model", str(served.folder), "--input", str(source), "--output", str(output)) == 0
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_seeded_sampling_does_not_depend_on_batching(ray_local, served, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    source = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"id": list(range(6)), "prompt": [f"Prompt number {i}" for i in range(6)]}), source)
    completions = []
    for rows_per_call in ("2", "6"):
        output = tmp_path / f"out-{rows_per_call}"
        assert generate_batch.main(["--model", str(served.folder), "--input", str(source), "--output", str(output),
                                    "--seed", "7", "--max-tokens", "6", "--batch-rows", rows_per_call]) == 0
        completions.append([row["completion"] for row in output_rows(output)])
    assert completions[0] == completions[1]


def test_scoring_gives_each_text_its_bits_per_byte(ray_local, served, corpus, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    texts = ["A short text.", "", (corpus / "text" / "the-verdict.txt").read_text()[:3000], None]
    source = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"id": list(range(4)), "text": texts}), source)
    output = tmp_path / "scores"
    assert run_job(tmp_path, "--model", str(served.folder), "--input", str(source), "--output", str(output),
                   "--score") == 0
    rows = output_rows(output)
    scorer = DocumentScorer(served)
    for index in (0, 2):
        assert rows[index]["bits_per_byte"] == pytest.approx(scorer.score(texts[index])[3], rel=1e-5)
    assert [rows[1]["error_code"], rows[3]["error_code"]] == ["no_text", "no_text"]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["errors"] == {"no_text": 2}
    assert manifest["text_bytes"] == sum(len(text.encode()) for text in texts if text)
