"""A dataset that lives on S3 (moto's server on loopback): built, rebuilt with O(new data), killed
mid-rebuild, finished, and read by a short pretraining run from its s3:// token shards."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from jobs import rebuild_dataset
from model.launch import launch
from model.pretrain import PretrainConfig, PretrainTask
from pipeline.build import tokenize_version, tokens_dir, tokens_root
from pipeline.build_config import BuildConfig, Plan
from pipeline.config import load_config, to_dict, validate
from pipeline.dedup.index import read_index
from pipeline.maintenance import compact_current_index
from pipeline.rebuild import rebuild
from pipeline.lease import LEASE_FILE, LEASE_FILES
from pipeline.versions import (
    BUILD_PREFIX,
    MANIFEST,
    VersionPaths,
    collect_garbage,
    is_complete,
    read_current,
    read_manifest,
    version_file,
)
from tests.integration.test_build import kill_process_group, settled
from tests.integration.test_rebuild import shakespeare_passages, write_jsonl

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def s3_files(prefix: str) -> dict[str, str]:
    """Every object below ``prefix`` with its ETag (its content's MD5): a rewrite shows."""
    fs, base = fsspec.core.url_to_fs(prefix)
    fs.invalidate_cache()
    return {path: info["ETag"] for path, info in fs.find(base, detail=True).items()}


@pytest.fixture(scope="module")
def dataset(ray_local, corpus, tmp_path_factory, s3_server):
    """v1 from a shared WARC, v2 from a JSONL file of new passages: both with token shards, on S3."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    bucket = f"s3-dataset-{os.getpid()}"
    fs.mkdir(bucket)
    folder = tmp_path_factory.mktemp("s3-dataset")
    incoming = folder / "incoming"
    incoming.mkdir()
    shutil.copy(corpus / "web" / "warc" / "crawl-sample-0000.warc.gz", incoming)
    root = f"s3://{bucket}/datasets/web"
    config_path = folder / "rebuild.yaml"
    config_path.write_text(
        f"dataset: {{name: web, version: v1}}\ninputs: [{incoming}]\noutput: {root}\n"
        "stages: [extract: {}, dedup: {exact: {enabled: true}, minhash: {preset: fineweb}}]\n"
        "shards: {target_mb: 0.02}\ncompute: {stage_workers: 1}\n"
        "tokenize: {tokenizer: gpt2, context_length: 32, val_fraction: 0.2, shard_tokens: 4000}\n"
    )
    config = load_config(BuildConfig, config_path)
    rebuild(config)
    tokenize_version(config, "v1")
    write_jsonl(incoming / "landed-0001.jsonl",
                [{"id": f"new-{i}", "text": text} for i, text in enumerate(shakespeare_passages(corpus, 6, start=2000))])
    before_v2 = s3_files(root)
    tokens_before_v2 = s3_files(tokens_root(config))
    result = rebuild(config)
    tokenize_version(config, result.version)
    return {"root": root, "config": config, "config_path": config_path, "folder": folder, "incoming": incoming,
            "before_v2": before_v2, "tokens_before_v2": tokens_before_v2, "corpus": corpus}


def test_a_rebuild_on_s3_writes_only_new_files_and_lists_its_parents(dataset):
    root = dataset["root"]
    assert read_current(root) == "v2"
    v1, v2 = read_manifest(f"{root}/v1"), read_manifest(f"{root}/v2")
    assert v2["documents"] == v1["documents"] + 6
    # Nothing of v1 was copied or rewritten: the objects written are v2's manifest and its own build.
    after = s3_files(root)
    written = {path for path in after if path not in dataset["before_v2"] or after[path] != dataset["before_v2"][path]}
    bucket_root = root.removeprefix("s3://")
    assert {path.removeprefix(f"{bucket_root}/") for path in written} == {
        "CURRENT", f"v2/{MANIFEST}", *(f"v2/{f['path']}" for f in v2["files"] if not f["path"].startswith("../"))
    }
    assert {f["path"] for f in v2["files"] if f["path"].startswith("../v1/")} == {f"../v1/{f['path']}" for f in v1["files"]}
    assert is_complete(VersionPaths(root, "v2"))


def test_token_shards_of_a_rebuild_tokenize_only_the_new_documents(dataset):
    config = dataset["config"]
    v1, v2 = read_manifest(tokens_dir(config, "v1")), read_manifest(tokens_dir(config, "v2"))
    assert v2["increment"]["documents"] + v2["increment"]["empty_documents"] == 6
    assert v2["documents"] == v1["documents"] + v2["increment"]["documents"]
    for split in ("train", "val"):
        inherited = [s for s in v2["splits"][split]["shards"] if s["path"].startswith("../v1/")]
        assert [s["path"] for s in inherited] == [f"../v1/{s['path']}" for s in v1["splits"][split]["shards"]]
    new_objects = set(s3_files(tokens_root(config))) - set(dataset["tokens_before_v2"])
    assert all("/v2/" in path for path in new_objects)


def test_a_rebuild_killed_on_s3_leaves_the_current_version_and_a_rerun_finishes(dataset):
    root, folder, config = dataset["root"], dataset["folder"], dataset["config"]
    write_jsonl(dataset["incoming"] / "landed-0002.jsonl",
                [{"id": f"late-{i}", "text": t} for i, t in enumerate(shakespeare_passages(dataset["corpus"], 3, 50_000))])
    v2_objects = {path: etag for path, etag in s3_files(root).items() if "/v2/" in path}
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    command = [sys.executable, str(REPO / "jobs" / "rebuild_dataset.py"), "--config", str(dataset["config_path"])]
    process = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while f"{root.removeprefix('s3://')}/{LEASE_FILE}" not in s3_files(root):
        assert process.poll() is None and time.monotonic() < deadline, "the rebuild ended before taking its lease"
        time.sleep(0.05)
    # A second run while the first holds the lease (a scheduler's catch-up tick) does nothing.
    second = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "another rebuild is running" in second.stdout, second.stdout + second.stderr
    # Killed as soon as its first file is out: shards come first, then the dedup index, then the manifest.
    while not any(f"/v3/{BUILD_PREFIX}" in path for path in s3_files(root)):
        assert process.poll() is None and time.monotonic() < deadline, "the rebuild ended before it could be killed"
        time.sleep(0.05)
    kill_process_group(process)

    assert read_current(root) == "v2" and is_complete(VersionPaths(root, "v2"))
    assert not is_complete(VersionPaths(root, "v3"))
    assert {path: etag for path, etag in s3_files(root).items() if "/v2/" in path} == v2_objects
    killed = settled(lambda: {path for path in s3_files(root) if "/v3/" in path})

    result = rebuild(config)
    assert (result.outcome, result.version, result.parent) == ("increment", "v3", "v2")
    assert read_current(root) == "v3" and is_complete(VersionPaths(root, "v3"))
    # The killed run's objects are listed by no version: garbage collection takes exactly those.
    assert set(collect_garbage(root, keep=LEASE_FILES, min_age_seconds=0)) == killed
    assert is_complete(VersionPaths(root, "v3"))


def test_pretraining_reads_the_token_shards_from_s3(dataset, tmp_path):
    tokens = tokens_dir(dataset["config"], "v2")
    assert tokens.startswith("s3://")
    config = validate(PretrainConfig, {
        "run": {"name": "from-s3", "output": str(tmp_path / "runs"), "max_steps": 3, "log_every_steps": 1,
                "eval_every_steps": 3},
        "model": {"preset": "tiny", "overrides": {"context_length": 32}},
        "data": {"sources": [{"path": tokens}], "val_sequences": 8},
        "batch": {"global_batch_size": 4, "micro_batch_size": 4},
        "checkpoint": {"every_steps": 3},
        "eval": {"val_batches": 1, "hellaswag": {"enabled": False}, "samples": {"prompts": []}},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tracking": {"enabled": False},
    })
    result = launch(config, PretrainTask(config), to_dict(config), {}, [])
    assert [entry["step"] for entry in result.history] == [1, 2, 3]
    assert all(math.isfinite(entry["loss"]) for entry in result.history)


def test_index_compaction_and_garbage_collection_keep_the_current_version_whole(dataset):
    root, config = dataset["root"], dataset["config"]
    before = read_manifest(f"{root}/{read_current(root)}")
    assert len(before["dedup_index"]["parts"]) == 3  # one per build: v1, v2, v3
    manifest = compact_current_index(config)
    assert len(manifest["dedup_index"]["parts"]) == 1 and manifest["dedup_index"]["rows"] == before["dedup_index"]["rows"]
    assert manifest["shards"] == before["shards"] and is_complete(VersionPaths(root, read_current(root)))
    compacted = read_index(version_file(f"{root}/{read_current(root)}", manifest["dedup_index"]["parts"][0]),
                           Plan(config).dedup_config)
    assert compacted.count() == before["dedup_index"]["rows"]

    # The job's --gc: the current version and its parents stay whole; v3's own old index part,
    # listed by no manifest now, goes.
    assert rebuild_dataset.main(["--config", str(dataset["config_path"]), "--gc", "--gc-min-age-hours", "0"]) == 0
    for version in ("v1", "v2", "v3"):
        assert is_complete(VersionPaths(root, version))
    old_part = f"{root.removeprefix('s3://')}/v3/{before['dedup_index']['parts'][2]}"
    assert not any(path.startswith(old_part) for path in s3_files(root))
