"""The index files are a function of the rows alone: same rows in any order, same bytes."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError
from pipeline.dedup.config import DedupConfig, ExactConfig
from pipeline.dedup.index import INDEX_SCHEMA, _with_file_number, _write_files, index_rows, key_settings, rows_with_keys


def random_rows(n: int, seed: int) -> pa.Table:
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
    rows = random_rows(500, seed=0)
    shuffled = rows.take(np.random.default_rng(1).permutation(rows.num_rows))
    counts = write(rows, tmp_path / "a")
    write(shuffled, tmp_path / "b")
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sum(counts["rows"].to_pylist()) == 500


def test_each_file_holds_its_keys_sorted(tmp_path):
    write(random_rows(300, seed=2), tmp_path / "index")
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


def write_part(rows: pa.Table, folder, config: DedupConfig) -> str:
    """An index part as ``write_index`` leaves it: sorted files under ``buckets/``, settings beside."""
    folder.mkdir()
    write(rows, folder / "buckets")
    (folder / "index.json").write_text(json.dumps({"settings": key_settings(config), "rows": rows.num_rows}))
    return str(folder)


def test_the_rows_sharing_a_key_are_read_from_every_part_in_this_process(tmp_path):
    config = DedupConfig()
    first, second = random_rows(400, seed=3), random_rows(300, seed=4)
    parts = [write_part(first, tmp_path / "v1", config), write_part(second, tmp_path / "v2", config)]
    assert index_rows(parts, config) == 700
    wanted = pa.concat_arrays([first["key_hi"].chunk(0)[::7], second["key_hi"].chunk(0)[5:9]])

    found = rows_with_keys(parts, config, wanted)
    assert found.schema == INDEX_SCHEMA
    both = pa.concat_tables([first, second])
    expected = both.filter(pc.is_in(both["key_hi"], value_set=wanted))
    assert sorted(found.to_pylist(), key=str) == sorted(expected.to_pylist(), key=str)
    assert found.num_rows == 58 + 4
    assert rows_with_keys(parts, config, pa.array([], pa.int64())).num_rows == 0


def test_an_index_part_of_other_settings_is_refused_before_it_is_read(tmp_path):
    part = write_part(random_rows(10, seed=5), tmp_path / "v1", DedupConfig(exact=ExactConfig(enabled=False)))
    with pytest.raises(ConfigError, match="other dedup settings"):
        index_rows([part], DedupConfig())
    with pytest.raises(ConfigError, match="other dedup settings"):
        rows_with_keys([part], DedupConfig(), pa.array([1], pa.int64()))
