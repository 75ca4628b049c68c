"""Scheduled rebuilds on a local Ray: v1 from real web files, then new files that repeat some of it.

One dataset grows through the module: v1 (first run), v2 (new file with copies of v1 documents),
no change (nothing written), then a rebuild that runs out of time. A rebuild killed midway is
tested on S3 (test_s3_dataset.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from pipeline.build_config import BuildConfig
from pipeline.config import load_config
from pipeline.rebuild import PARENT_RUN_TAG, PARENT_VERSION_TAG, log_rebuild, rebuild
from pipeline.versions import MANIFEST, read_current, read_manifest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

V1_FILES = ("web/warc/crawl-sample-0000.warc.gz", "web/jsonl/ccnet-en-head-0091.jsonl.gz")


def write_config(folder: Path, incoming: Path, root: Path) -> Path:
    path = folder / "rebuild.yaml"
    path.write_text(
        f"dataset: {{name: web, version: v1}}\ninputs: [{incoming}]\noutput: {root}\n"
        "stages: [extract: {}, dedup: {exact: {enabled: true}, minhash: {preset: fineweb}}]\n"
        "shards: {target_mb: 0.05}\ncompute: {stage_workers: 1}\n"
    )
    return path


def shakespeare_passages(corpus: Path, count: int, start: int) -> list[str]:
    """Distinct 120-word passages, far apart in the play text: unique documents."""
    words = (corpus / "text" / "tinyshakespeare.txt").read_text().split()
    return [" ".join(words[start + i * 3000 : start + i * 3000 + 120]) for i in range(count)]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def dataset_ids(version_dir: Path) -> set[str]:
    manifest = read_manifest(str(version_dir))
    return {doc_id for s in manifest["shards"] for doc_id in pq.read_table(version_dir / s["path"], columns=["id"])["id"].to_pylist()}


def shard_texts(version_dir: Path) -> dict[str, str]:
    manifest = read_manifest(str(version_dir))
    texts = {}
    for shard in manifest["shards"]:
        table = pq.read_table(version_dir / shard["path"], columns=["id", "text"])
        texts.update(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    return texts


def assert_intact(version_dir: Path) -> None:
    """Every file the manifest lists is there with its checksum, and the counts agree."""
    manifest = read_manifest(str(version_dir))
    for shard in manifest["shards"]:
        assert hashlib.sha256((version_dir / shard["path"]).read_bytes()).hexdigest() == shard["sha256"], shard["path"]
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["documents"] == len(dataset_ids(version_dir))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grown(ray_local, corpus, tmp_path_factory):
    """v1 from shared web files, then v2 from one new file: copies of v1 documents (two exact, one
    with a word changed), unique passages, and one passage twice. Both logged to MLflow."""
    folder = tmp_path_factory.mktemp("rebuild")
    incoming, root = folder / "incoming", folder / "datasets" / "web"
    incoming.mkdir()
    for name in V1_FILES:
        shutil.copy(corpus / name, incoming)
    config = load_config(BuildConfig, write_config(folder, incoming, root))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        first = rebuild(config)
        first_run = log_rebuild(first, config.experiment)

        v1_texts = sorted(shard_texts(root / "v1").items(), key=lambda item: -len(item[1]))
        (_, exact_a), (_, exact_b), (_, near) = v1_texts[:3]
        words = near.split()
        words[len(words) // 2] = "zebra"
        passages = shakespeare_passages(corpus, 5, start=1000)
        records = [
            {"id": "new-01", "url": "https://example.org/copy-a", "text": exact_a},
            {"id": "new-02", "url": "https://example.org/copy-b", "text": exact_b},
            {"id": "new-03", "url": "https://example.org/near", "text": " ".join(words)},
            *({"id": f"new-1{i}", "url": f"https://example.org/p{i}", "text": p} for i, p in enumerate(passages)),
            {"id": "new-20", "url": "https://example.org/p0-again", "text": passages[0]},
        ]
        write_jsonl(incoming / "landed-0001.jsonl", records)
        second = rebuild(config)
        second_run = log_rebuild(second, config.experiment)
    return {
        "folder": folder, "incoming": incoming, "root": root, "config": config, "first": first,
        "second": second, "runs": (first_run, second_run), "unique_new": {f"new-1{i}" for i in range(5)},
    }


def test_first_run_builds_v1_and_makes_it_current(grown):
    assert grown["first"].outcome == "first" and grown["first"].parent is None
    assert read_manifest(str(grown["root"] / "v1"))["inputs"][0]["path"].startswith(str(grown["incoming"]))
    assert_intact(grown["root"] / "v1")


def test_v2_is_v1_plus_the_new_unique_documents(grown):
    root, second = grown["root"], grown["second"]
    assert second.outcome == "increment" and (second.version, second.parent) == ("v2", "v1")
    assert read_current(str(root)) == "v2"
    assert dataset_ids(root / "v2") == dataset_ids(root / "v1") | grown["unique_new"]
    assert_intact(root / "v2")
    assert_intact(root / "v1")

    manifest = read_manifest(str(root / "v2"))
    assert manifest["parent"]["version"] == "v1"
    assert manifest["parent"]["manifest_sha256"] == hashlib.sha256((root / "v1" / MANIFEST).read_bytes()).hexdigest()
    assert [item["path"] for item in manifest["increment"]["inputs"]] == [str(grown["incoming"] / "landed-0001.jsonl")]
    assert manifest["increment"]["documents"] == len(grown["unique_new"])
    dedup = next(s for s in manifest["increment"]["stages"] if s["name"] == "dedup")
    assert dedup["drops"] == {"exact_dup": 3, "near_dup": 1}
    assert manifest["documents"] == read_manifest(str(root / "v1"))["documents"] + len(grown["unique_new"])

    # O(new data): v2 lists v1's files where they are and adds only the increment's.
    v1 = read_manifest(str(root / "v1"))
    inherited = [f for f in manifest["files"] if f["path"].startswith("../v1/")]
    assert {f["path"].removeprefix("../v1/") for f in inherited} == {f["path"] for f in v1["files"]}
    own = [f for f in manifest["files"] if f["path"].startswith(f"{manifest['build']}/")]
    assert len(own) + len(inherited) == len(manifest["files"])
    assert {p.relative_to(root / "v2").as_posix() for p in (root / "v2").rglob("*") if p.is_file()} == {
        MANIFEST, *(f["path"] for f in own)
    }
    # The dedup index grows by a part holding the new documents' rows (14 bands + the exact hash).
    index = manifest["dedup_index"]
    assert index["parts"] == [f"../v1/{v1['dedup_index']['parts'][0]}", f"{manifest['build']}/dedup_index"]
    assert index["part_rows"][1] == 15 * len(grown["unique_new"])


def test_rebuild_run_is_linked_to_the_parent_build_run(grown):
    first_run, second_run = grown["runs"]
    client = mlflow.MlflowClient(f"sqlite:///{grown['folder'] / 'mlflow.db'}")
    run = client.get_run(second_run)
    assert run.data.tags[PARENT_VERSION_TAG] == "v1"
    assert run.data.tags[PARENT_RUN_TAG] == first_run
    assert run.data.tags["dataset.version"] == "v2"
    assert run.data.metrics["increment.documents"] == len(grown["unique_new"])
    assert run.data.metrics["documents"] == grown["second"].manifest["documents"]


def test_rebuild_without_new_inputs_creates_nothing(grown):
    before = snapshot(grown["root"])
    result = rebuild(grown["config"])
    assert (result.outcome, result.version) == ("unchanged", "v2")
    assert snapshot(grown["root"]) == before


def test_a_rebuild_that_runs_too_long_stops_itself_and_leaves_the_current_version(grown, corpus):
    root, folder = grown["root"], grown["folder"]
    passages = shakespeare_passages(corpus, 3, start=60_000)
    write_jsonl(grown["incoming"] / "landed-0003.jsonl", [{"id": f"slow-{i}", "text": p} for i, p in enumerate(passages)])
    current = read_current(str(root))
    before = snapshot(root / current)
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    command = [sys.executable, str(REPO / "jobs" / "rebuild_dataset.py"), "--config", str(folder / "rebuild.yaml"),
               "--set", "schedule.max_seconds=2"]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "ran longer than schedule.max_seconds=2" in result.stderr, result.stderr
    assert read_current(str(root)) == current
    assert snapshot(root / current) == before
