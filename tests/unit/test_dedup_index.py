"""The index files are a function of the rows alone: same rows in any order, same bytes."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.index import INDEX_SCHEMA, _with_file_number, _write_files


def index_rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {"key_hi": rng.integers(-(2**63), 2**63 - 1, n), "key_lo": rng.integers(-(2**63), 2**63 - 1, n),
         "band": rng.integers(-1, 14, n).astype(np.int16), "id": [f"doc-{i % 50}" for i in range(n)]},
        schema=INDEX_SCHEMA,
    )


def write(rows: pa.Table, folder) -> pa.Table:
    folder.mkdir()
    return _write_files(_with_file_number(rows, files=3), fsspec.filesystem("file"), str(folder))


def test_files_do_not_depend_on_row_order(tmp_path):
    rows = index_rows(500, seed=0)
    shuffled = rows.take(np.random.default_rng(1).permutation(rows.num_rows))
    counts = write(rows, tmp_path / "a")
    write(shuffled, tmp_path / "b")
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sum(counts["rows"].to_pylist()) == 500


def test_each_file_holds_its_keys_sorted(tmp_path):
    write(index_rows(300, seed=2), tmp_path / "index")
    for number in range(3):
        table = pq.read_table(tmp_path / "index" / f"part-{number:05d}.parquet")
        assert table.schema == INDEX_SCHEMA
        keys = table["key_hi"].to_numpy()
        assert (keys.view(np.uint64) % np.uint64(3) == number).all()
        assert (np.diff(keys) >= 0).all()


def test_an_empty_index_is_one_empty_file(tmp_path):
    local = fsspec.filesystem("file")
    counts = _write_files(_with_file_number(INDEX_SCHEMA.empty_table(), 1), local, str(tmp_path), always=True)
    assert counts.to_pylist() == [{"file": 0, "rows": 0}]
    assert pq.read_table(tmp_path / "part-00000.parquet").num_rows == 0
