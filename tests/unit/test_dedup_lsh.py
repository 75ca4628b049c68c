"""Band keys, the S-curve, per-document keys and candidate edges from buckets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.config import DedupConfig, ExactConfig, MinHashConfig
from pipeline.dedup.keys import KEY_BAND, KEY_HI, DocumentKeyer, key_rows, to_bucket_rows
from pipeline.dedup.lsh import EXACT_BAND, band_keys, bucket_edges, describe_s_curve, s_curve
from pipeline.dedup.nodes import NEW
from pipeline.documents import table_from_rows


def test_s_curve_of_the_presets():
    fineweb = s_curve(14, 8)
    assert fineweb[0.8] == pytest.approx(0.9235, abs=1e-4)
    assert fineweb[0.9] > 0.999 and fineweb[0.5] < 0.06
    assert list(fineweb.values()) == sorted(fineweb.values())
    nemo = s_curve(20, 13)
    assert nemo[0.8] == pytest.approx(1 - (1 - 0.8**13) ** 20)
    assert "J=0.8: 0.924" in describe_s_curve(14, 8)


def test_band_keys_depend_on_values_band_and_scope():
    rng = np.random.default_rng(0)
    signature = rng.integers(0, 2**32, size=(1, 16), dtype=np.uint32)
    changed = signature.copy()
    changed[0, 13] += 1  # one value of band 1 (values 8..15)
    swapped = np.concatenate([signature[:, 8:], signature[:, :8]], axis=1)  # band 0 and band 1 swap values
    batch = np.vstack([signature, changed, swapped])
    hi, lo = band_keys(batch, rows=8, scope_hashes=np.zeros(3, dtype=np.uint64))
    assert hi.shape == lo.shape == (3, 2) and hi.dtype == np.int64
    assert (hi[0, 0], lo[0, 0]) == (hi[1, 0], lo[1, 0])  # band 0 untouched
    assert hi[0, 1] != hi[1, 1] and lo[0, 1] != lo[1, 1]
    assert hi[0, 0] != hi[2, 1]  # same values in another band: another bucket
    other_scope, _ = band_keys(signature, rows=8, scope_hashes=np.array([1], dtype=np.uint64))
    assert (other_scope != hi[0]).all()


def bucket_table(rows: list[tuple[int, int, int, str]]) -> pa.Table:
    key_hi, key_lo, band, node = zip(*rows)
    return pa.table(
        {"key_hi": pa.array(key_hi, pa.int64()), "key_lo": pa.array(key_lo, pa.int64()),
         "band": pa.array(band, pa.int16()), "node": list(node)}
    )


def edge_set(edges: pa.Table) -> set[tuple[str, str, bool]]:
    return set(zip(edges["lo"].to_pylist(), edges["hi"].to_pylist(), edges["exact"].to_pylist()))


def test_bucket_edges_join_every_member_to_the_smallest():
    rows = [
        (1, 1, 0, "1d"), (1, 1, 0, "1b"), (1, 1, 0, "1c"),  # one bucket of three
        (1, 2, 0, "1x"),                                      # same key_hi, other bucket: alone
        (2, 1, 3, "1c"), (2, 1, 3, "1b"),                     # the same pair again, another band
        (3, 3, EXACT_BAND, "1z"), (3, 3, EXACT_BAND, "1b"),   # an exact bucket
        (4, 4, 1, "1q"), (4, 4, 1, "1q"),                     # a node twice in one bucket
    ]
    assert edge_set(bucket_edges(bucket_table(rows))) == {
        ("1b", "1c", False), ("1b", "1d", False), ("1b", "1z", True),
    }
    assert bucket_edges(bucket_table(rows[:1])).num_rows == 0
    assert bucket_edges(bucket_table(rows).slice(0, 0)).num_rows == 0


def test_a_pair_found_by_exact_and_band_buckets_is_exact():
    rows = [(5, 5, 0, "1a"), (5, 5, 0, "1b"), (6, 6, EXACT_BAND, "1b"), (6, 6, EXACT_BAND, "1a")]
    assert edge_set(bucket_edges(bucket_table(rows))) == {("1a", "1b", True)}


TEXT = (
    "the committee met on tuesday to discuss the budget for the coming year and agreed on most points "
    "after a long debate about roads schools and the new library the members voted to raise the fees "
    "for parking in the centre of town while keeping the rates for residents as they were last year "
    "the mayor thanked everyone for their work and said the next meeting would take place in march"
)


def docs(rows: list[dict]) -> pa.Table:
    return table_from_rows([{"id": f"d{i}", "source": "s", **row} for i, row in enumerate(rows)])


def keys_of(table: pa.Table, row: int) -> set[tuple[int, int]]:
    hi = table[KEY_HI][row].as_py()
    band = table[KEY_BAND][row].as_py()
    return set(zip(hi, band))


def test_document_keys():
    batch = docs(
        [
            {"text": TEXT},
            {"text": TEXT.upper() + "  "},                            # exact after normalization
            {"text": TEXT.replace("tuesday", "wednesday")},           # near duplicate
            {"text": None, "drop_reason": "filter:short"},           # dropped earlier: no keys
            {"text": "..."},                                          # no shingles: exact key only
        ]
    )
    keyed = DocumentKeyer(DedupConfig())(batch)
    assert keyed.column_names[: batch.num_columns] == batch.column_names
    assert [len(keys_of(keyed, row)) for row in range(5)] == [15, 15, 15, 0, 1]
    assert keys_of(keyed, 0) == keys_of(keyed, 1)
    shared = keys_of(keyed, 0) & keys_of(keyed, 2)
    assert 0 < len(shared) < 15 and all(band != EXACT_BAND for _, band in shared)
    rows = key_rows(keyed)
    assert rows.num_rows == 46 and set(rows["id"].to_pylist()) == {"d0", "d1", "d2", "d4"}
    assert set(to_bucket_rows(rows, NEW)["node"].to_pylist()) == {"1d0", "1d1", "1d2", "1d4"}


def test_keys_follow_the_config():
    batch = docs([{"text": TEXT, "source": "a"}, {"text": TEXT, "source": "b"}])
    scoped = DocumentKeyer(DedupConfig(group_by="source"))(batch)
    assert not keys_of(scoped, 0) & keys_of(scoped, 1)
    exact_only = DocumentKeyer(DedupConfig(minhash=MinHashConfig(enabled=False)))(batch)
    assert keys_of(exact_only, 0) == keys_of(exact_only, 1) and len(keys_of(exact_only, 0)) == 1
    nothing = DocumentKeyer(DedupConfig(exact=ExactConfig(enabled=False), minhash=MinHashConfig(enabled=False)))(batch)
    assert key_rows(nothing).num_rows == 0


@pytest.mark.parametrize("minhash", [MinHashConfig(), MinHashConfig(preset="nemo", normalize={"strip_punctuation": True})])
def test_band_keys_do_not_depend_on_reusing_the_exact_normalization(minhash):
    batch = docs([{"text": "Ünïcode — «quotes»,  dashes–and   spaces!\n" + TEXT}, {"text": TEXT.title()}])
    with_exact = DocumentKeyer(DedupConfig(minhash=minhash))(batch)
    alone = DocumentKeyer(DedupConfig(minhash=minhash, exact=ExactConfig(enabled=False)))(batch)
    for row in range(2):
        assert keys_of(alone, row) == {key for key in keys_of(with_exact, row) if key[1] != EXACT_BAND}
