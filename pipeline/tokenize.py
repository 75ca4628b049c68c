"""Clean text shards -> packed token shards, the last step of a dataset build.

    text version (its manifest's shards)
      --encode (tiktoken, one tokenizer per actor)--> one token list per document, <|endoftext|> appended
      --split by hash(id)--> train / val          (a document never lands in both)
      --shard by hash(id), sort by id, concatenate, cut windows--> <build>/{split}/part-*.parquet
      --published like a text version (``versions.py``): manifest, then nothing else

Each row of a token shard is one window of ``context_length + 1`` tokens: the model reads the first
``context_length`` and predicts the last ``context_length``. Consecutive windows overlap by one token,
so every token of the stream is a target exactly once. The last window of a shard is padded with
<|endoftext|> and says how many of its tokens are real (``n_tokens``); the loader masks the rest.

Determinism: which split and shard a document goes to depends only on its id, and each shard
concatenates its documents in id order, so the same text gives byte-identical token shards whatever
the number of input files, blocks or workers. Sequence ids are ``shard << 32 | row``: unique within
a split and stable for a given build. Nothing passes through the driver except one summary row per shard.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col
import xxhash
from pydantic import Field

from pipeline.actor_pool import map_with_class
from pipeline.config import config_dataclass, to_dict
from pipeline.progress import report
from pipeline.storage import filesystem, sha256_of, write_bytes
from pipeline.tokenizer import load_tokenizer, tokenizer_identity
from pipeline.versions import (
    MANIFEST,
    Build,
    VersionPaths,
    is_complete,
    open_version,
    publish,
    read_manifest,
    rebase,
    version_file,
)

FORMAT = "packed-token-shards/1"
SPLITS = ("train", "val")
# Rows per Parquet row group: the unit the loader reads and shuffles within.
ROW_GROUP_ROWS = 1024
# Seeds of the two id hashes, so that the split a document lands in and its shard are independent.
SPLIT_SEED, SHARD_SEED = 0x5EED, 0
HISTOGRAM_BINS = 40  # doc lengths in tokens, bin k holds lengths in [2**k, 2**(k+1))
ENCODE_BLOCK_BYTES = 8 << 20


@config_dataclass
class TokenizeConfig:
    # "gpt2", "cl100k_base", ... or a folder written by pipeline.tokenizer.train_bpe.
    tokenizer: str = "gpt2"
    context_length: Annotated[int, Field(ge=1)] = 1024
    # Share of documents (by id hash) held out for validation.
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    # Target tokens per shard; each split gets ceil(tokens / shard_tokens) shards.
    shard_tokens: Annotated[int, Field(ge=1)] = 50_000_000
    compression: str = "zstd"
    # Tokenizer actors (one CPU each) and documents per batch they encode.
    encode_workers: Annotated[int, Field(ge=1)] = 2
    batch_size: Annotated[int, Field(ge=1)] = 256


class TokenShardsExist(RuntimeError):
    """The output folder holds a complete build made from other input or with another config."""


def token_dtype(n_vocab: int) -> pa.DataType:
    """The smallest unsigned type that holds every token id."""
    return pa.uint16() if n_vocab <= 1 << 16 else pa.uint32()


def split_of(doc_id: str, val_fraction: float) -> str:
    return "val" if xxhash.xxh64_intdigest(doc_id.encode(), SPLIT_SEED) < val_fraction * 2**64 else "train"


class DocumentEncoder:
    """``map_batches`` class: text shard paths -> one token row per document, with its split.

    Each actor loads the tokenizer once, then reads its shards a batch of documents at a time and
    encodes them: tokens with <|endoftext|> appended, in the smallest dtype, and the document's split.
    """

    def __init__(self, tokenizer: str, val_fraction: float, batch_rows: int):
        self.encoding = load_tokenizer(tokenizer)
        self.dtype = token_dtype(self.encoding.n_vocab)
        self.val_fraction = val_fraction
        self.batch_rows = batch_rows

    def __call__(self, files: pa.Table) -> Iterator[pa.Table]:
        for path in files["path"].to_pylist():
            with filesystem(path).open(path, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=self.batch_rows, columns=["id", "text"]):
                    yield self.encode(pa.Table.from_batches([batch]))

    def encode(self, documents: pa.Table) -> pa.Table:
        ids = documents["id"].to_pylist()
        texts = [text or "" for text in documents["text"].to_pylist()]
        # A plain loop: Ray runs an actor per CPU, and encode_ordinary_batch's thread pool would only
        # add a hand-off per document. An empty document stays a row with no tokens (not even
        # <|endoftext|>), so that it is counted, then skipped before packing.
        encode, eot = self.encoding.encode_ordinary, self.encoding.eot_token
        token_lists = [encode(text) + [eot] if text else [] for text in texts]
        lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(chain.from_iterable(token_lists), self.dtype.to_pandas_dtype(), int(offsets[-1]))
        return pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "split": pa.array([split_of(doc_id, self.val_fraction) for doc_id in ids], pa.string()),
                "n_tokens": pa.array(lengths, pa.int64()),
                # The text's UTF-8 bytes: exactly what its tokens (all but <|endoftext|>) decode to.
                "n_bytes": pa.array([len(text.encode("utf-8")) for text in texts], pa.int64()),
                "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, self.dtype)),
            }
        )


def assign_shard(batch: pa.Table, shards_per_split: dict[str, int]) -> pa.Table:
    """``map_batches`` function adding ``_group`` = ``"{split}/{shard}"``."""
    groups = [
        f"{split}/{xxhash.xxh64_intdigest(doc_id.encode(), SHARD_SEED) % shards_per_split[split]}"
        for doc_id, split in zip(batch["id"].to_pylist(), batch["split"].to_pylist())
    ]
    return batch.append_column("_group", pa.array(groups, pa.string()))


def pack_windows(stream: np.ndarray, context_length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """A token stream -> (windows of ``context_length + 1`` tokens overlapping by one, real tokens per window)."""
    total = len(stream)
    rows = max(1, math.ceil((total - 1) / context_length))
    padded = np.full(rows * context_length + 1, pad, stream.dtype)
    padded[:total] = stream
    starts = np.arange(rows) * context_length
    windows = np.lib.stride_tricks.sliding_window_view(padded, context_length + 1)[starts]
    return windows, np.minimum(total - starts, context_length + 1)


def write_token_shard(
    group: pa.Table,
    folder: str,
    shards_per_split: dict[str, int],
    config: TokenizeConfig,
    pad: int,
    first_shard: dict[str, int] | None = None,
) -> pa.Table:
    """``map_groups`` function: the documents of one shard -> its Parquet file, and one summary row.
    ``first_shard``: per split, the shards a parent version holds already; this shard's number, and
    so its sequence ids, follow theirs."""
    split, shard = group["_group"][0].as_py().split("/")
    offset = (first_shard or {}).get(split, 0)
    shard = offset + int(shard)
    group = group.sort_by("id")
    stream = pc.list_flatten(group["tokens"].combine_chunks()).to_numpy()
    windows, real = pack_windows(stream, config.context_length, pad)
    dtype = group.schema.field("tokens").type.value_type
    table = pa.table(
        {
            "sequence_id": pa.array((shard << 32) + np.arange(len(windows), dtype=np.int64)),
            "tokens": pa.FixedSizeListArray.from_arrays(pa.array(windows.ravel(), dtype), config.context_length + 1),
            "n_tokens": pa.array(real.astype(np.int32)),
        }
    )
    path = f"{split}/part-{shard:05d}-of-{offset + shards_per_split[split]:05d}.parquet"
    lengths = group["n_tokens"].to_numpy()
    histogram = np.bincount(np.floor(np.log2(lengths)).astype(np.int64), minlength=HISTOGRAM_BINS)
    return pa.Table.from_pylist(
        [
            {
                "split": split,
                "shard": shard,
                "path": path,
                "sequences": len(table),
                "tokens": int(lengths.sum()),
                "bytes": int(pc.sum(group["n_bytes"]).as_py() or 0),
                "documents": len(group),
                "sha256": _write_parquet(f"{folder}/{path}", table, config.compression),
                "histogram": histogram.tolist(),
            }
        ]
    )


def _write_parquet(path: str, table: pa.Table, compression: str) -> str:
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression=compression,
        row_group_size=ROW_GROUP_ROWS,
        # Token ids are near-random 16-bit values and sequence ids unique: dictionaries only cost time.
        # Statistics are kept for sequence ids alone, to find a sequence's row group.
        use_dictionary=False,
        write_statistics=["sequence_id"],
    )
    return write_bytes(path, buffer.getvalue())


def encode_documents(text_files: list[str], config: TokenizeConfig) -> ray.data.Dataset:
    """The encoding stage as a Ray Data plan: text shards -> one token row per document.

    The shard list comes from the text manifest (nothing is listed); each shard is read by the
    actor that encodes it, so text never travels between processes.
    """
    files = ray.data.from_items([{"path": path} for path in text_files], override_num_blocks=len(text_files))
    # Output blocks of a few MB: the next steps get them as they come.
    files.context.target_max_block_size = ENCODE_BLOCK_BYTES
    return map_with_class(
        files, DocumentEncoder, workers=min(config.encode_workers, len(text_files)), one_block=len(text_files) == 1,
        constructor_kwargs={"tokenizer": config.tokenizer, "val_fraction": config.val_fraction, "batch_rows": config.batch_size},
        batch_size=1, batch_format="pyarrow",
    )


def build_token_shards(
    text_dir: str, out_dir: str, config: TokenizeConfig, parent: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Tokenize a published text version into token shards at ``out_dir``; returns the token manifest.

    Runs on the current Ray cluster. A rerun over a complete output built from the same text manifest
    and config returns its manifest and does nothing; one built otherwise raises ``TokenShardsExist``
    (``overwrite``: build it again beside it). ``parent``: the token version of the text version's
    parent. When it was made from that very text with this config, only the documents the rebuild
    added are tokenized, and the parent's token files are listed, not copied.
    """
    text_dir = text_dir.rstrip("/")
    text_manifest = open_version(text_dir)  # complete, or it says what is missing
    identity = tokenizer_identity(config.tokenizer)
    source = {"text_dir": text_dir, "manifest_sha256": sha256_of(f"{text_dir}/{MANIFEST}")}

    paths = VersionPaths.of(out_dir.rstrip("/"))
    if is_complete(paths) and not overwrite:
        existing = read_manifest(paths.final)
        if existing["source"] == source and existing["config"] == to_dict(config):
            return existing
        raise TokenShardsExist(
            f"{paths.final} already holds token shards built from other text or with another config; "
            "choose another output folder, delete it, or build with --overwrite"
        )

    inherited = _inheritable(parent, text_manifest, config)
    text_shards = text_manifest["increment"]["shards"] if inherited else text_manifest["shards"]
    first_shard = {split: len(inherited["splits"][split]["shards"]) if inherited else 0 for split in SPLITS}
    build = Build.start(paths)
    started = time.perf_counter()
    summaries, empty_documents = encode_and_write(
        [version_file(text_dir, shard["path"]) for shard in text_shards], config, build, first_shard
    )
    manifest = assemble_manifest(config, identity, source, summaries, empty_documents, build.name)
    report("tokens", manifest["documents"], time.perf_counter() - started, unit="documents",
           detail=f"{manifest['total_tokens']:,} tokens")
    text_documents = sum(shard["rows"] for shard in text_shards)
    if manifest["documents"] + empty_documents != text_documents:
        raise RuntimeError(
            f"{text_dir}'s shards hold {text_documents} documents, but {manifest['documents']} were tokenized "
            f"and {empty_documents} skipped as empty; nothing was published"
        )
    hashes = {shard["path"]: shard["sha256"] for split in manifest["splits"].values() for shard in split["shards"]}
    if not inherited:
        return publish(build, manifest, hashes)
    from_parent = partial(rebase, from_dir=parent, to_dir=paths.final)
    merged = merged_manifest(inherited, manifest, from_parent, parent)
    return publish(build, merged, hashes, inherited=[{**f, "path": from_parent(f["path"])} for f in inherited["files"]])


def encode_and_write(
    text_files: list[str], config: TokenizeConfig, build: Build, first_shard: dict[str, int]
) -> tuple[list[dict[str, Any]], int]:
    """Encode the text files' documents and write them as token shards into ``build``'s folder;
    returns one summary per shard and the number of empty documents skipped."""
    if not text_files:
        return [], 0
    encoded = encode_documents(text_files, config).materialize()
    empty_documents = encoded.filter(expr=col("n_tokens") == 0).count()
    encoded = encoded.filter(expr=col("n_tokens") > 0)
    tokens_per_split = {
        row["split"]: row["sum(n_tokens)"]
        for row in encoded.groupby("split", num_partitions=len(SPLITS)).sum("n_tokens").take_all()
    }
    shards_per_split = {split: max(1, math.ceil(tokens / config.shard_tokens)) for split, tokens in tokens_per_split.items()}
    summaries = (
        encoded.map_batches(assign_shard, fn_kwargs={"shards_per_split": shards_per_split}, batch_format="pyarrow")
        .groupby("_group", num_partitions=sum(shards_per_split.values()))
        .map_groups(
            write_token_shard,
            fn_kwargs={
                "folder": build.folder,
                "shards_per_split": shards_per_split,
                "config": config,
                "pad": load_tokenizer(config.tokenizer).eot_token,
                "first_shard": first_shard,
            },
            batch_format="pyarrow",
        )
        .take_all()
    )
    return summaries, empty_documents


def _inheritable(parent: str | None, text_manifest: dict[str, Any], config: TokenizeConfig) -> dict[str, Any] | None:
    """The parent token version's manifest, if this version's text is a rebuild of the very text
    those tokens were made from, with the same config; else None (tokenize everything)."""
    lineage = text_manifest.get("parent")
    if parent is None or lineage is None or not is_complete(VersionPaths.of(parent)):
        return None
    manifest = read_manifest(parent)
    made_from_parent_text = manifest["source"]["manifest_sha256"] == lineage["manifest_sha256"]
    return manifest if made_from_parent_text and manifest["config"] == to_dict(config) else None


def merged_manifest(
    parent: dict[str, Any], increment: dict[str, Any], from_parent: Callable[[str], str], parent_dir: str
) -> dict[str, Any]:
    """The parent's token manifest plus this increment's: shards listed, counts added."""
    splits = {}
    for split in SPLITS:
        mine, theirs = increment["splits"][split], parent["splits"][split]
        splits[split] = {
            **{key: theirs[key] + mine[key] for key in ("documents", "tokens", "bytes", "sequences")},
            "shards": [{**shard, "path": from_parent(shard["path"])} for shard in theirs["shards"]] + mine["shards"],
        }
    histogram: Counter[int] = Counter()
    for low, count in parent["doc_tokens_histogram"] + increment["doc_tokens_histogram"]:
        histogram[low] += count
    return {
        **increment,
        "parent": {"tokens_dir": parent_dir, "manifest_sha256": sha256_of(f"{parent_dir}/{MANIFEST}")},
        "increment": {key: increment[key] for key in ("documents", "empty_documents", "total_tokens", "total_bytes")},
        **{key: parent[key] + increment[key] for key in ("documents", "empty_documents", "total_tokens", "total_bytes")},
        "splits": splits,
        "doc_tokens_histogram": [[low, count] for low, count in sorted(histogram.items())],
    }




def assemble_manifest(
    config: TokenizeConfig,
    identity: dict[str, Any],
    source: dict[str, Any],
    summaries: list[dict[str, Any]],
    empty_documents: int,
    build_name: str,
) -> dict[str, Any]:
    summaries = sorted(summaries, key=lambda s: (SPLITS.index(s["split"]), s["shard"]))
    splits = {}
    for split in SPLITS:
        mine = [s for s in summaries if s["split"] == split]
        splits[split] = {
            "documents": sum(s["documents"] for s in mine),
            "tokens": sum(s["tokens"] for s in mine),
            "bytes": sum(s["bytes"] for s in mine),
            "sequences": sum(s["sequences"] for s in mine),
            "shards": [
                {"path": f"{build_name}/{s['path']}", **{key: s[key] for key in ("sequences", "tokens", "bytes", "documents", "sha256")}}
                for s in mine
            ],
        }
    histogram = np.sum([s["histogram"] for s in summaries], axis=0) if summaries else np.zeros(HISTOGRAM_BINS, np.int64)
    return {
        "format": FORMAT,
        "source": source,
        "config": to_dict(config),
        "tokenizer": identity,
        "context_length": config.context_length,
        "sequence_length": config.context_length + 1,
        "dtype": str(token_dtype(identity["n_vocab"])),
        "eot_token": load_tokenizer(config.tokenizer).eot_token,
        "row_group_rows": ROW_GROUP_ROWS,
        "documents": sum(s["documents"] for s in splits.values()),
        # Text documents with no text: nothing to train on, so no tokens (counted, not lost silently).
        "empty_documents": empty_documents,
        "total_tokens": sum(s["tokens"] for s in splits.values()),
        # UTF-8 bytes of the text the tokens encode, for bits per byte: nats / (ln 2 * bytes).
        "total_bytes": sum(s["bytes"] for s in splits.values()),
        "splits": splits,
        # [lowest length of the bin, documents]: bin k holds lengths in [2**k, 2**(k+1)).
        "doc_tokens_histogram": [[2**k, int(count)] for k, count in enumerate(histogram) if count],
    }


def plot_doc_length_histogram(manifest: dict[str, Any], path: str) -> str:
    """A PNG of document lengths in tokens (log-2 bins) from a token manifest; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lows, counts = zip(*manifest["doc_tokens_histogram"]) if manifest["doc_tokens_histogram"] else ((1,), (0,))
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.bar(lows, counts, width=lows, align="edge")  # a bin is as wide as its lower edge: [2**k, 2**(k+1))
    axes.set_xscale("log", base=2)
    axes.set_xlabel("document length in tokens (incl. <|endoftext|>)")
    axes.set_ylabel("documents")
    axes.set_title(f"{manifest['tokenizer']['name']}: {manifest['total_tokens']:,} tokens")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
