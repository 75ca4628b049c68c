"""The dataset build on a local Ray over the real shared crawl files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.build import BuildConfig, build
from pipeline.config import load_config
from pipeline.readers import ReadConfig, list_inputs, read_file
from pipeline.shards import MANIFEST, VersionPaths

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def web_inputs(corpus: Path) -> list[str]:
    return [str(corpus / "web" / kind) for kind in ("warc", "wet", "jsonl")]


def config_file(tmp_path: Path, inputs: list[str], output: Path, stages: str = "[extract: {}]") -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(
        f"dataset: {{name: web, version: v1}}\ninputs: {json.dumps(inputs)}\noutput: {output}\n"
        f"stages: {stages}\nshards: {{target_mb: 0.2}}\ncompute: {{stage_workers: 1}}\n"
    )
    return path


def test_every_record_is_kept_or_counted(ray_local, corpus, tmp_path):
    inputs = web_inputs(corpus)
    config = load_config(BuildConfig, config_file(tmp_path, inputs, tmp_path / "out"))
    manifest = build(config)

    expected_records = sum(len(list(read_file(f["path"], ReadConfig()))) for f in list_inputs(inputs))
    assert manifest["records"] == expected_records
    stages = manifest["stages"]
    assert [s["name"] for s in stages] == ["read", "extract"]
    assert stages[-1]["docs_out"] == manifest["documents"]
    assert manifest["records"] - sum(sum(s["drops"].values()) for s in stages) == manifest["documents"]

    version_dir = tmp_path / "out" / "v1"
    shard_rows = {s["path"]: pq.read_metadata(version_dir / s["path"]).num_rows for s in manifest["shards"]}
    assert shard_rows == {s["path"]: s["rows"] for s in manifest["shards"]}
    assert sum(shard_rows.values()) == manifest["documents"] > 100
    assert len(manifest["shards"]) > 1
    audit = pq.read_table(version_dir / "audit")
    assert audit.num_rows == manifest["audit"]["rows"] == manifest["records"] - manifest["documents"]
    assert manifest["read_errors"] == {}  # the well-formed samples: only non-document records are skipped

    again = build(config)
    assert again.skipped and again == manifest


def run_build_job(config: Path, *, kill_after_staging: bool = False) -> subprocess.Popen | None:
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": f"sqlite:///{config.parent / 'mlflow.db'}"}
    command = [sys.executable, str(REPO / "jobs" / "build_dataset.py"), "--config", str(config)]
    process = subprocess.Popen(command, cwd=config.parent, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not kill_after_staging:
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, output
        return None
    return process


def test_killed_build_is_rebuilt_byte_identical(corpus, tmp_path):
    output = tmp_path / "out"
    config = config_file(tmp_path, web_inputs(corpus), output)
    paths = VersionPaths(str(output), "v1")

    run_build_job(config)
    reference = tmp_path / "reference"
    shutil.copytree(paths.final, reference)
    shutil.rmtree(paths.final)

    process = run_build_job(config, kill_after_staging=True)
    deadline = time.monotonic() + 600
    while not Path(paths.staging).exists():
        assert process.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.2)
    time.sleep(2)  # let it write part of the output
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (Path(paths.final) / MANIFEST).exists(), "a killed build must not look complete"

    run_build_job(config)
    rebuilt = {p.relative_to(paths.final): p.read_bytes() for p in Path(paths.final).rglob("*") if p.is_file()}
    expected = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert rebuilt.keys() == expected.keys()
    assert rebuilt == expected
    assert not Path(paths.staging).exists()
