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
from typing import Callable, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.build import build
from pipeline.build_config import BuildConfig
from pipeline.config import load_config
from pipeline.readers import ReadConfig, list_inputs, read_file
from pipeline.versions import BUILD_PREFIX, MANIFEST, VersionPaths, collect_garbage

T = TypeVar("T")
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
    audit = pa.concat_tables(pq.read_table(version_dir / path) for path in manifest["audit"]["files"])
    assert audit.num_rows == manifest["audit"]["rows"] == manifest["records"] - manifest["documents"]
    assert manifest["read_errors"] == {}  # the well-formed samples: only non-document records are skipped

    again = build(config)
    assert again.skipped and again == manifest


def start_build_job(config: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": f"sqlite:///{config.parent / 'mlflow.db'}"}
    command = [sys.executable, str(REPO / "jobs" / "build_dataset.py"), "--config", str(config)]
    return subprocess.Popen(command, cwd=config.parent, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_process_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def settled(snapshot: Callable[[], T], quiet_seconds: float = 3.0, timeout: float = 60.0) -> T:
    """``snapshot()`` once it has stopped changing: a killed job's Ray workers outlive its driver for
    a moment and may finish a file they were writing."""
    deadline = time.monotonic() + timeout
    last, since = snapshot(), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        assert time.monotonic() < deadline, "the files kept changing"
        time.sleep(0.2)
        current = snapshot()
        if current != last:
            last, since = current, time.monotonic()
    return last


def listed_files(version_dir: Path) -> dict[str, bytes]:
    """The files a version's manifest lists, by their path inside their build folder."""
    manifest = json.loads((version_dir / MANIFEST).read_text())
    return {f["path"].split("/", 1)[1]: (version_dir / f["path"]).read_bytes() for f in manifest["files"]}


def test_killed_build_is_rebuilt_byte_identical(ray_local, corpus, tmp_path):
    output = tmp_path / "out"
    config = config_file(tmp_path, web_inputs(corpus), output)
    version_dir = Path(VersionPaths(str(output), "v1").final)

    build(load_config(BuildConfig, config))
    expected = listed_files(version_dir)
    shutil.rmtree(output)

    process = start_build_job(config)
    deadline = time.monotonic() + 600
    # Killed as soon as its first file is out: shards come first, then the dedup index, then the manifest.
    while not any(version_dir.glob(f"{BUILD_PREFIX}*/*")):
        assert process.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.02)
    kill_process_group(process)
    assert not (version_dir / MANIFEST).exists(), "a killed build must not look complete"
    killed = settled(lambda: {p for p in output.rglob("*") if p.is_file()})

    build(load_config(BuildConfig, config))
    assert listed_files(version_dir) == expected
    # What the killed build wrote is listed by no manifest: garbage, and collected as such.
    assert {Path(p) for p in collect_garbage(str(output), min_age_seconds=0)} == killed
    assert {str(p.relative_to(version_dir)) for p in version_dir.rglob("*") if p.is_file()} == {
        MANIFEST, *(f["path"] for f in json.loads((version_dir / MANIFEST).read_text())["files"])
    }
