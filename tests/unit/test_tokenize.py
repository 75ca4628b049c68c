"""Packing documents into token windows, splitting by id hash, and the token shards' manifest, with no Ray.

``build_without_ray`` runs the same stage functions the Ray build runs (encode, assign a shard, write
each shard, assemble the manifest) in one process; the loader's unit tests use it too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, validate
from pipeline.documents import stable_id
from pipeline.tokenize import (
    DocumentEncoder,
    TokenizeConfig,
    assemble_manifest,
    assign_shard,
    pack_windows,
    plot_doc_length_histogram,
    split_of,
    token_dtype,
    write_token_shard,
)
from pipeline.tokenizer import load_tokenizer, tokenizer_identity
from pipeline.versions import Build, VersionPaths, publish


def documents(texts: list[str], source: str = "test") -> pa.Table:
    return pa.table({"id": [stable_id(source, str(i)) for i in range(len(texts))], "text": texts})


def build_without_ray(docs: pa.Table, out: Path, config: TokenizeConfig, batch_rows: int = 500) -> dict:
    """The build's stages in one process: encode batch by batch, shard, write, manifest."""
    out.mkdir(parents=True, exist_ok=True)
    encoder = DocumentEncoder(config.tokenizer, config.val_fraction, batch_rows)
    encoded = pa.concat_tables(encoder.encode(docs.slice(i, batch_rows)) for i in range(0, len(docs), batch_rows))
    empty = pc.equal(encoded["n_tokens"], 0)
    empty_documents = pc.sum(empty).as_py() or 0
    encoded = encoded.filter(pc.invert(empty))
    tokens = {split: pc.sum(encoded.filter(pc.equal(encoded["split"], split))["n_tokens"]).as_py() or 0 for split in ("train", "val")}
    shards = {split: max(1, -(-total // config.shard_tokens)) for split, total in tokens.items() if total}
    grouped = assign_shard(encoded, shards)
    summaries = []
    for group in sorted(set(grouped["_group"].to_pylist())):
        rows = grouped.filter(pc.equal(grouped["_group"], group))
        pad = load_tokenizer(config.tokenizer).eot_token
        summaries += write_token_shard(rows, str(out / "build-test"), shards, config, pad).to_pylist()
    manifest = assemble_manifest(
        config, tokenizer_identity(config.tokenizer), {"text_dir": "memory"}, summaries, empty_documents, "build-test"
    )
    return publish(Build(VersionPaths.of(str(out)), "build-test"), manifest)


def decoded_documents(out: Path, manifest: dict, split: str) -> Counter[str]:
    """Each shard's windows joined back into its token stream, cut at <|endoftext|>, decoded."""
    encoding = load_tokenizer(manifest["config"]["tokenizer"])
    found: Counter[str] = Counter()
    for shard in manifest["splits"][split]["shards"]:
        table = pq.read_table(out / shard["path"])
        windows = np.stack(table["tokens"].to_numpy(zero_copy_only=False))
        real = table["n_tokens"].to_numpy()
        stream = np.concatenate([windows[0, : real[0]]] + [windows[i, 1 : real[i]] for i in range(1, len(windows))])
        ends = np.flatnonzero(stream == encoding.eot_token)
        assert ends[-1] == len(stream) - 1  # a shard ends with a whole document
        for doc in np.split(stream, ends + 1)[:-1]:
            found[encoding.decode(doc[:-1].tolist())] += 1
    return found


@pytest.fixture(scope="module")
def shakespeare(corpus) -> pa.Table:
    return documents((corpus / "text" / "tinyshakespeare.txt").read_text().split("\n\n"), "shakespeare")


@pytest.fixture(scope="module")
def shakespeare_build(shakespeare, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tokens")
    return out, build_without_ray(shakespeare, out, TokenizeConfig(context_length=64, shard_tokens=60_000, val_fraction=0.1))


def test_encoder_reads_shards_a_batch_at_a_time(tmp_path):
    pq.write_table(pa.table({"id": ["x", "y", "z"], "url": ["u"] * 3, "text": ["one", "two", "three"]}), tmp_path / "a.parquet")
    batches = list(DocumentEncoder("gpt2", val_fraction=0.0, batch_rows=2)(pa.table({"path": [str(tmp_path / "a.parquet")]})))
    assert [b["id"].to_pylist() for b in batches] == [["x", "y"], ["z"]]
    assert batches[1]["tokens"].to_pylist() == [load_tokenizer("gpt2").encode_ordinary("three") + [50256]]


def test_windows_overlap_by_one_so_every_token_is_a_target_once():
    stream = np.arange(10, dtype=np.uint16)
    windows, real = pack_windows(stream, context_length=4, pad=99)
    assert windows.tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9, 99, 99, 99]]
    assert real.tolist() == [5, 5, 2]
    targets = np.concatenate([w[1:n] for w, n in zip(windows, real)])
    assert targets.tolist() == stream[1:].tolist()


@pytest.mark.parametrize("total, rows, last", [(5, 1, 5), (6, 2, 2), (9, 2, 5), (2, 1, 2)])
def test_window_count_at_the_edges(total, rows, last):
    windows, real = pack_windows(np.arange(total, dtype=np.uint16), context_length=4, pad=0)
    assert (len(windows), int(real[-1])) == (rows, last)


def test_split_is_a_stable_function_of_the_id_with_the_asked_share():
    ids = [stable_id("x", str(i)) for i in range(20_000)]
    splits = [split_of(doc_id, 0.1) for doc_id in ids]
    assert splits == [split_of(doc_id, 0.1) for doc_id in ids]
    share = splits.count("val") / len(ids)
    assert abs(share - 0.1) < 3 * (0.1 * 0.9 / len(ids)) ** 0.5
    assert {split_of(doc_id, 0.0) for doc_id in ids} == {"train"}


def test_token_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert token_dtype(50257) == pa.uint16() and token_dtype(65536) == pa.uint16()
    assert token_dtype(65537) == pa.uint32() and token_dtype(200019) == pa.uint32()


def test_encoder_appends_endoftext_and_keeps_empty_documents_as_rows_without_tokens():
    encoder = DocumentEncoder("gpt2", val_fraction=0.0, batch_rows=10)
    out = encoder.encode(pa.table({"id": ["a", "b", "c"], "text": ["Hello world", "", None]}))
    assert out["id"].to_pylist() == ["a", "b", "c"]  # counted as empty by the build, then skipped
    assert out["tokens"].to_pylist() == [[15496, 995, 50256], [], []]
    assert out["n_tokens"].to_pylist() == [3, 0, 0]
    assert out.schema.field("tokens").type.value_type == pa.uint16()


def test_shards_decode_back_to_the_documents_and_no_document_is_in_both_splits(shakespeare, shakespeare_build):
    out, manifest = shakespeare_build
    texts = shakespeare["text"].to_pylist()
    by_split = {split: Counter(t for t, i in zip(texts, shakespeare["id"].to_pylist()) if split_of(i, 0.1) == split) for split in ("train", "val")}
    assert decoded_documents(out, manifest, "train") == by_split["train"]
    assert decoded_documents(out, manifest, "val") == by_split["val"]
    assert sum(by_split["val"].values()) > 0


def test_manifest_counts_tokens_per_split_and_shard(shakespeare, shakespeare_build):
    out, manifest = shakespeare_build
    encoding = load_tokenizer("gpt2")
    expected = sum(len(tokens) + 1 for tokens in encoding.encode_ordinary_batch(shakespeare["text"].to_pylist()))
    assert manifest["total_tokens"] == expected
    train = manifest["splits"]["train"]
    assert len(train["shards"]) == -(-train["tokens"] // 60_000)
    assert train["tokens"] == sum(shard["tokens"] for shard in train["shards"])
    for shard in train["shards"]:
        table = pq.read_table(out / shard["path"])
        assert len(table) == shard["sequences"] == -(-(shard["tokens"] - 1) // 64)
        assert table.schema.field("tokens").type == pa.list_(pa.uint16(), 65)
        assert table["sequence_id"].to_pylist() == [(int(shard["path"][-22:-17]) << 32) + i for i in range(len(table))]
    assert manifest["tokenizer"] == tokenizer_identity("gpt2")
    assert (manifest["context_length"], manifest["dtype"], manifest["eot_token"]) == (64, "uint16", 50256)
    assert sum(count for _, count in manifest["doc_tokens_histogram"]) == len(shakespeare)


def test_a_shard_file_does_not_depend_on_input_order_or_batching(shakespeare, tmp_path):
    config = TokenizeConfig(context_length=32, shard_tokens=10**9, val_fraction=0.0)
    reversed_docs = shakespeare.take(np.arange(len(shakespeare))[::-1].copy())
    first = build_without_ray(shakespeare, tmp_path / "a", config, batch_rows=700)
    second = build_without_ray(reversed_docs, tmp_path / "b", config, batch_rows=333)
    assert first["splits"] == second["splits"]
    assert (tmp_path / "a" / "build-test" / "train" / "part-00000-of-00001.parquet").read_bytes() == (
        tmp_path / "b" / "build-test" / "train" / "part-00000-of-00001.parquet"
    ).read_bytes()


def test_histogram_png(shakespeare, tmp_path):
    manifest = build_without_ray(shakespeare.slice(0, 300), tmp_path, TokenizeConfig(context_length=64))
    path = plot_doc_length_histogram(manifest, str(tmp_path / "lengths.png"))
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


@pytest.mark.parametrize(
    "options, message",
    [({"context_length": 0}, "context_length"), ({"val_fraction": 1.0}, "val_fraction"), ({"shard_size": 5}, "shard_size: unknown key")],
)
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        validate(TokenizeConfig, options)
