"""Small document sets for the dedup integration tests (real English sentences from the shared
corpus, with planted exact and near duplicates whose expected fate is known), and how the tests
run and check a dedup."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import ray

from pipeline.dedup import DedupConfig, DedupResult, deduplicate
from pipeline.documents import stable_id, table_from_rows


@dataclass
class Planted:
    rows: list[dict] = field(default_factory=list)
    # Each removed document's reason, and each clustered document's (cluster id, cluster size).
    removed: dict[str, str] = field(default_factory=dict)
    clusters: dict[str, tuple[str, int]] = field(default_factory=dict)

    def table(self) -> pa.Table:
        return table_from_rows(self.rows)


def sentences(corpus: Path) -> list[str]:
    return (corpus / "lang" / "sentences" / "en.txt").read_text().splitlines()


def base_text(pool: list[str], rng: random.Random, n_sentences: int = 10) -> str:
    return " ".join(rng.sample(pool, n_sentences))


def near_copy(text: str, rng: random.Random) -> str:
    """One word replaced in a text of 150+ words: word 5-gram Jaccard about 0.94."""
    words = text.split()
    words[rng.randrange(len(words))] = "replaced"
    return " ".join(words)


def planted_documents(corpus: Path, prefix: str, families: int = 12, singles: int = 40, seed: int = 0) -> Planted:
    """``families`` groups of an original, an exact copy (case and spacing changed) and a near copy;
    ``singles`` unrelated documents; two rows already dropped by an earlier stage."""
    rng = random.Random(seed)
    pool = sentences(corpus)
    planted = Planted()

    def add(key: str, text: str | None, **extra) -> str:
        doc_id = stable_id(prefix, key)
        planted.rows.append({"id": doc_id, "url": f"https://example.org/{prefix}/{key}", "source": prefix, "text": text, **extra})
        return doc_id

    for family in range(families):
        text = base_text(pool, rng, 15)
        members = {
            add(f"f{family}-original", text): text,
            add(f"f{family}-exact", "  " + text.upper().replace(" ", "   ")): text,
            add(f"f{family}-near", near_copy(text, rng)): None,
        }
        expect_family(planted, members)
    for single in range(singles):
        add(f"s{single}", base_text(pool, rng))
    add("dropped-0", None, drop_reason="gopher:too_short", drop_value=3.0)
    add("dropped-1", None, drop_reason="language:not_en", drop_value=0.2)
    return planted


def expect_family(planted: Planted, members: dict[str, str | None]) -> None:
    """The smallest id survives; a member with an identical text under a smaller id is an exact
    duplicate, any other removed member a near duplicate. ``members``: id -> exact-group text."""
    survivor = min(members)
    for doc_id, text in members.items():
        planted.clusters[doc_id] = (survivor, len(members))
        if doc_id == survivor:
            continue
        twins = [other for other, t in members.items() if t is not None and t == text and other < doc_id]
        planted.removed[doc_id] = "dedup:exact_dup" if twins else "dedup:near_dup"


def run(
    table: pa.Table, config: DedupConfig, blocks: int = 3, previous_index: list[str] | None = None
) -> tuple[DedupResult, list[dict]]:
    """Deduplicate ``table`` cut into ``blocks`` blocks; the output rows sorted by id."""
    ds = ray.data.from_arrow(table).repartition(blocks).materialize()
    result = deduplicate(ds, config, previous_index=previous_index)
    rows = sorted(result.documents.take_all(), key=lambda row: row["id"])
    return result, rows


def check(rows: list[dict], planted: Planted, input_rows: list[dict]) -> None:
    """Every input row is there; exactly the planted removals happened; clusters and payloads."""
    by_id = {row["id"]: row for row in input_rows}
    assert sorted(row["id"] for row in rows) == sorted(by_id)
    removed = {row["id"]: row["drop_reason"] for row in rows if str(row["drop_reason"]).startswith("dedup:")}
    assert removed == planted.removed
    for row in rows:
        original = by_id[row["id"]]
        if original.get("drop_reason"):  # dropped upstream: passes through untouched
            assert row["drop_reason"] == original["drop_reason"] and row["drop_value"] == original["drop_value"]
            assert row["dup_cluster_id"] is None and row["dup_cluster_size"] is None
            continue
        cluster = planted.clusters.get(row["id"], (row["id"], 1))
        assert (row["dup_cluster_id"], row["dup_cluster_size"]) == cluster
        if row["id"] in removed:
            assert row["text"] is None and row["drop_value"] == float(cluster[1])
        else:
            assert row["text"] == original["text"] and row["url"] == original.get("url")
