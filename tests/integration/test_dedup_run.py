"""Deduplication on a local Ray: planted duplicates, both component paths, determinism, scope,
and incremental rebuilds against the persisted index."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import ray

from pipeline.config import ConfigError
from pipeline.dedup import DedupConfig, MinHashConfig, deduplicate, write_index
from pipeline.dedup import run as dedup_run
from pipeline.documents import table_from_rows
from tests.integration.dedup_documents import (
    Planted,
    base_text,
    check,
    expect_family,
    near_copy,
    planted_documents,
    run,
    sentences,
)

pytestmark = pytest.mark.integration


def test_planted_duplicates_are_removed(ray_local, corpus):
    planted = planted_documents(corpus, "web")
    result, rows = run(planted.table(), DedupConfig())
    check(rows, planted, planted.rows)
    assert result.stats["components"]["method"] == "union_find"
    assert result.stats["removed"] == {
        "exact_dup": sum(r == "dedup:exact_dup" for r in planted.removed.values()),
        "near_dup": sum(r == "dedup:near_dup" for r in planted.removed.values()),
    }


def test_distributed_components_and_any_block_count_give_the_same_rows_and_index(ray_local, corpus, tmp_path):
    planted = planted_documents(corpus, "web", families=8, singles=20, seed=1)
    runs = {
        "union_find, 1 block": (DedupConfig(), 1),
        "star_rounds, 5 blocks": (DedupConfig(union_find_edge_limit=0), 5),
        "union_find, 7 blocks": (DedupConfig(), 7),
    }
    outputs = {}
    for name, (config, blocks) in runs.items():
        result, rows = run(planted.table(), config, blocks=blocks)
        assert result.stats["components"]["method"] == name.split(",")[0]
        # Small files, so that several are written and their split is checked too.
        summary = write_index(result.index, str(tmp_path / str(blocks)), config, rows_per_file=150)
        outputs[name] = (rows, summary, index_files(tmp_path / str(blocks)))
    reference_rows, summary, files = outputs["union_find, 1 block"]
    check(reference_rows, planted, planted.rows)
    assert summary["files"] > 1 and len(files) == summary["files"] + 1  # and index.json
    for name, output in outputs.items():
        assert output == outputs["union_find, 1 block"], name

    # Rewriting an index in place replaces it whole.
    write_index(result.index, str(tmp_path / "7"), DedupConfig(), rows_per_file=10_000)
    assert sorted(index_files(tmp_path / "7")) == ["buckets/part-00000.parquet", "index.json"]


def index_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_group_by_dump_keeps_one_copy_per_dump(ray_local, corpus):
    text = base_text(sentences(corpus), random.Random(5), 12)
    table = table_from_rows(
        [{"id": "a", "dump": "CC-MAIN-2024-10", "source": "x", "text": text},
         {"id": "b", "dump": "CC-MAIN-2024-18", "source": "x", "text": text},
         {"id": "c", "dump": "CC-MAIN-2024-18", "source": "y", "text": text}]
    )
    _, scoped = run(table, DedupConfig(group_by="dump"))
    assert [row["drop_reason"] for row in scoped] == [None, None, "dedup:exact_dup"]
    assert [row["dup_cluster_id"] for row in scoped] == ["a", "b", "b"]
    _, everywhere = run(table, DedupConfig())
    assert [row["drop_reason"] for row in everywhere] == [None, "dedup:exact_dup", "dedup:exact_dup"]
    with pytest.raises(ConfigError, match="dedup.group_by: the documents have no column 'crawl'"):
        deduplicate(ray.data.from_arrow(table), DedupConfig(group_by="crawl"))


@pytest.mark.parametrize("pairing", ["in the driver", "shuffled"])
def test_incremental_rebuild_removes_only_the_new_copies(ray_local, corpus, tmp_path, monkeypatch, pairing):
    """A small increment's indexed rows are read and its buckets paired in the driver; a large
    index is read by Ray tasks, and a large increment's buckets go through a shuffle."""
    if pairing == "shuffled":
        monkeypatch.setattr(dedup_run, "ONE_PROCESS_INDEX_ROWS", 0)
        monkeypatch.setattr(dedup_run, "ONE_PROCESS_BUCKET_ROWS", 0)
    rng = random.Random(7)
    pool = sentences(corpus)
    config = DedupConfig()

    first = planted_documents(corpus, "crawl-1", families=4, singles=10, seed=2)
    result, rows = run(first.table(), config)
    check(rows, first, first.rows)
    write_index(result.index, str(tmp_path / "v1" / "dedup_index"), config)
    kept_v1 = [row for row in rows if row["drop_reason"] is None]

    # New files: copies of kept documents (exact, and near), two new documents that copy each
    # other, and new unrelated ones. Ids are chosen to sort *before* the old ones they copy, so
    # only the rule "indexed documents are never removed" keeps the old ones.
    second = Planted()
    for n, old in enumerate(kept_v1[:6]):
        copy_id = f"0000-copy-{n}"
        text = old["text"] if n % 2 else near_copy(old["text"], rng)
        second.rows.append({"id": copy_id, "source": "crawl-2", "text": text})
        second.removed[copy_id] = "dedup:exact_dup" if n % 2 else "dedup:near_dup"
        second.clusters[copy_id] = (old["id"], 2)
    twin_text = base_text(pool, rng, 12)
    second.rows += [{"id": "new-twin-a", "source": "crawl-2", "text": twin_text},
                    {"id": "new-twin-b", "source": "crawl-2", "text": twin_text}]
    expect_family(second, {"new-twin-a": twin_text, "new-twin-b": twin_text})
    second.rows += [{"id": f"new-{n}", "source": "crawl-2", "text": base_text(pool, rng)} for n in range(5)]

    v1_index = str(tmp_path / "v1" / "dedup_index")
    result, rows = run(second.table(), config, previous_index=[v1_index])
    check(rows, second, second.rows)
    # Only the new documents were keyed: the old ones are known by their index rows alone.
    assert result.stats["keyed_documents"] == len(second.rows)
    v2_index = tmp_path / "v2" / "dedup_index"
    summary = write_index(result.index, str(v2_index), config)
    assert summary["rows"] == 15 * (1 + 5)  # the new part holds the 6 new documents kept, only them

    # The chain: v3 reads both parts to catch copies of documents from both earlier builds.
    third = Planted()
    v2_new = next(row for row in rows if row["id"] == "new-0")
    for copy_id, old in (("0-copy-of-v1", kept_v1[-1]), ("0-copy-of-v2", v2_new)):
        third.rows.append({"id": copy_id, "source": "crawl-3", "text": old["text"]})
        third.removed[copy_id] = "dedup:exact_dup"
        third.clusters[copy_id] = (old["id"], 2)
    _, rows = run(third.table(), config, previous_index=[v1_index, str(v2_index)])
    check(rows, third, third.rows)


def test_an_index_from_other_settings_is_refused(ray_local, corpus, tmp_path):
    planted = planted_documents(corpus, "web", families=1, singles=2)
    result, _ = run(planted.table(), DedupConfig())
    write_index(result.index, str(tmp_path / "index"), DedupConfig())
    ds = ray.data.from_arrow(planted.table())
    with pytest.raises(ConfigError, match=r"other dedup settings \(minhash\)"):
        deduplicate(ds, DedupConfig(minhash=MinHashConfig(bands=7, rows=16)), previous_index=[str(tmp_path / "index")])
    with pytest.raises(ConfigError, match="no dedup index at"):
        deduplicate(ds, DedupConfig(), previous_index=[str(tmp_path / "missing")])
