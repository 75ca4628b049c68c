"""From component labels to per-document decisions, and applying them to a document batch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.components import LABEL_SCHEMA
from pipeline.dedup.decisions import apply_decisions, decide, exact_flags, flagged_labels
from pipeline.dedup.lsh import EDGE_SCHEMA
from pipeline.documents import table_from_rows


def labels(rows: list[tuple[str, str, int]]) -> pa.Table:
    return pa.table({"node": [r[0] for r in rows], "label": [r[1] for r in rows], "size": [r[2] for r in rows]}, schema=LABEL_SCHEMA)


def edges(rows: list[tuple[str, str, bool]]) -> pa.Table:
    return pa.table({"lo": [r[0] for r in rows], "hi": [r[1] for r in rows], "exact": [r[2] for r in rows]}, schema=EDGE_SCHEMA)


def test_decisions_keep_the_smallest_and_name_the_reason():
    component = labels([("1a", "1a", 3), ("1b", "1a", 3), ("1c", "1a", 3)])
    flags = exact_flags(edges([("1a", "1b", True), ("1a", "1c", False)]))
    decided = decide(pa.concat_tables([flagged_labels(component), flags]))
    assert decided.sort_by("id").to_pylist() == [
        {"id": "a", "dup_cluster_id": "a", "dup_cluster_size": 3, "dup_reason": None},
        {"id": "b", "dup_cluster_id": "a", "dup_cluster_size": 3, "dup_reason": "dedup:exact_dup"},
        {"id": "c", "dup_cluster_id": "a", "dup_cluster_size": 3, "dup_reason": "dedup:near_dup"},
    ]


def test_indexed_documents_get_no_decision_and_win_their_component():
    # "0z" is a kept document from an earlier build: it ranks before every new one.
    component = labels([("0z", "0z", 3), ("1a", "0z", 3), ("1b", "0z", 3)])
    decided = decide(pa.concat_tables([flagged_labels(component), exact_flags(edges([("0z", "1b", True)]))]))
    assert sorted(decided["id"].to_pylist()) == ["a", "b"]
    assert set(decided["dup_cluster_id"].to_pylist()) == {"z"}
    assert dict(zip(decided["id"].to_pylist(), decided["dup_reason"].to_pylist())) == {
        "a": "dedup:near_dup", "b": "dedup:exact_dup",
    }


def test_apply_decisions():
    docs = table_from_rows(
        [
            {"id": "a", "text": "kept survivor", "html": "<p>a</p>"},
            {"id": "b", "text": "removed copy", "html": "<p>b</p>"},
            {"id": "s", "text": "singleton"},
            {"id": "x", "text": None, "drop_reason": "gopher:too_short", "drop_value": 3.0},
        ]
    )
    decisions = decide(flagged_labels(labels([("1a", "1a", 2), ("1b", "1a", 2), ("1q", "1a", 2)])))
    out = apply_decisions(docs, decisions)
    assert out.column_names == [*docs.column_names, "dup_cluster_id", "dup_cluster_size"]
    assert out.schema.field("dup_cluster_size").type == pa.int64()
    rows = {row["id"]: row for row in out.to_pylist()}
    assert rows["a"] == {**docs.to_pylist()[0], "dup_cluster_id": "a", "dup_cluster_size": 2}
    assert (rows["b"]["drop_reason"], rows["b"]["drop_value"], rows["b"]["text"], rows["b"]["html"]) == (
        "dedup:near_dup", 2.0, None, None,
    )
    assert (rows["b"]["dup_cluster_id"], rows["b"]["dup_cluster_size"]) == ("a", 2)
    assert (rows["s"]["dup_cluster_id"], rows["s"]["dup_cluster_size"], rows["s"]["drop_reason"]) == ("s", 1, None)
    assert rows["x"] == {**docs.to_pylist()[3], "dup_cluster_id": None, "dup_cluster_size": None}


def test_apply_decisions_to_a_batch_without_clusters():
    docs = table_from_rows([{"id": "a", "text": "t"}])
    out = apply_decisions(docs, decide(flagged_labels(LABEL_SCHEMA.empty_table())))
    assert out.to_pylist() == [{**docs.to_pylist()[0], "dup_cluster_id": "a", "dup_cluster_size": 1}]
    assert pc.all(pc.is_null(out["drop_reason"])).as_py()
