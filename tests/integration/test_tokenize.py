"""``build_token_shards`` on Ray: real text in, shards that decode back to it, deterministic and atomic."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.readers import ReadConfig, read_file
from pipeline.tokenize import TokenizeConfig, TokenShardsExist, build_token_shards, split_of
from pipeline.versions import Build, VersionPaths, publish
from tests.unit.test_tokenize import build_without_ray, decoded_documents, documents

pytestmark = pytest.mark.integration

CONFIG = TokenizeConfig(context_length=128, shard_tokens=100_000, val_fraction=0.05, batch_size=128)


@pytest.fixture(scope="module")
def source_documents(corpus) -> pa.Table:
    """tinyshakespeare (a document per blank-line paragraph) and the shared Common Crawl WET pages."""
    shakespeare = documents((corpus / "text" / "tinyshakespeare.txt").read_text().split("\n\n"), "shakespeare")
    wet = [row for row in read_file(str(corpus / "web" / "wet" / "cc-main-2016-50-sample.warc.wet.gz"), ReadConfig()) if row.get("text")]
    assert len(wet) >= 20
    web = pa.table({"id": [row["id"] for row in wet], "text": [row["text"] for row in wet]})
    empty = documents(["", None], "empty")  # counted as empty by the token stage, never lost silently
    return pa.concat_tables([shakespeare, web, empty])


def write_text_version(docs: pa.Table, folder: Path, n_files: int) -> str:
    """A published clean-text version as the build writes it: id-sorted Parquet shards and a manifest."""
    build = Build(VersionPaths.of(str(folder)), "build-text")
    (folder / build.name / "shards").mkdir(parents=True)
    shards = []
    for index in range(n_files):
        part = docs.take(list(range(index, len(docs), n_files))).sort_by("id")
        path = f"{build.name}/shards/part-{index:05d}-of-{n_files:05d}.parquet"
        pq.write_table(part, folder / path)
        shards.append({"path": path, "rows": len(part), "sha256": hashlib.sha256((folder / path).read_bytes()).hexdigest()})
    publish(build, {"documents": len(docs), "shards": shards})
    return str(folder)


def without_build(splits: dict) -> dict:
    """A token manifest's splits with the build folder left out of the shard paths."""
    return {
        split: {**values, "shards": [{**s, "path": s["path"].split("/", 1)[1]} for s in values["shards"]]}
        for split, values in splits.items()
    }


@pytest.fixture(scope="module")
def built(ray_local, source_documents, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tokenize")
    text_dir = write_text_version(source_documents, root / "text", n_files=3)
    (root / "tokens" / "v1" / "build-20260101T000000Z-dead00").mkdir(parents=True)  # a killed build's folder
    (root / "tokens" / "v1" / "build-20260101T000000Z-dead00" / "junk.parquet").write_bytes(b"partial")
    return root, build_token_shards(text_dir, str(root / "tokens" / "v1"), CONFIG)


def test_shards_decode_back_to_the_source_text_split_by_id(built, source_documents):
    root, manifest = built
    out = root / "tokens" / "v1"
    texts, ids = source_documents["text"].to_pylist(), source_documents["id"].to_pylist()
    for split in ("train", "val"):
        expected = Counter(text for text, doc_id in zip(texts, ids) if text and split_of(doc_id, CONFIG.val_fraction) == split)
        assert decoded_documents(out, manifest, split) == expected
        # The exact UTF-8 bytes of each split's text, for bits per byte; per shard they add up.
        assert manifest["splits"][split]["bytes"] == sum(len(text.encode()) for text in expected.elements())
        assert sum(shard["bytes"] for shard in manifest["splits"][split]["shards"]) == manifest["splits"][split]["bytes"]
    assert manifest["total_bytes"] == sum(len(text.encode()) for text in texts if text)
    assert manifest["splits"]["val"]["documents"] > 0
    # Every text document is tokenized or counted as empty.
    assert manifest["empty_documents"] == sum(1 for text in texts if not text) > 0
    assert manifest["documents"] + manifest["empty_documents"] == len(texts)
    assert sorted(p.name for p in (root / "tokens").iterdir()) == ["v1"]
    assert not any("dead00" in f["path"] for f in manifest["files"])  # the killed build's folder is garbage


def test_ray_build_is_byte_identical_to_a_single_process_build(built, source_documents, tmp_path):
    _, manifest = built
    assert len(manifest["splits"]["train"]["shards"]) > 1
    reference = build_without_ray(source_documents, tmp_path, CONFIG, batch_rows=1000)
    # Same files (sha256), tokens, sequences, documents.
    assert without_build(manifest["splits"]) == without_build(reference["splits"])
    assert manifest["total_tokens"] == reference["total_tokens"]


def test_a_rerun_over_a_complete_output_is_a_no_op(built):
    root, manifest = built
    out = root / "tokens" / "v1"
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert build_token_shards(str(root / "text"), str(out), CONFIG) == manifest
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before


def test_a_complete_output_from_another_config_is_not_overwritten(built):
    root, _ = built
    with pytest.raises(TokenShardsExist, match="another config"):
        build_token_shards(str(root / "text"), str(root / "tokens" / "v1"), TokenizeConfig(context_length=256))
