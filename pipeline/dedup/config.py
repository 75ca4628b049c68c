"""What deduplication does, as typed config: normalization, exact hashing, MinHash-LSH, scope, scale.

``MinHashConfig`` comes in two presets. ``fineweb`` (the default) is FineWeb's choice: word 5-grams
over punctuation-free text, 112 permutations read as 14 bands of 8 rows. ``nemo`` is NeMo Curator's:
character 24-grams, 20 bands of 13 rows. Naming a preset fills every key the config leaves out, so
``{preset: nemo, bands: 10}`` is NeMo's setup with 10 bands.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import ArgsKwargs

from pipeline.config import config_dataclass

Positive = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


@config_dataclass
class NormalizeConfig:
    """How text is normalized before it is hashed or shingled."""

    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = "NFC"
    casefold: bool = True
    collapse_whitespace: bool = True
    # Every character that is neither a word character nor whitespace becomes a space.
    strip_punctuation: bool = False


@config_dataclass
class ExactConfig:
    enabled: bool = True
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)


MINHASH_PRESETS: dict[str, dict[str, Any]] = {
    "fineweb": {
        "shingle": "word",
        "ngram": 5,
        "bands": 14,
        "rows": 8,
        "hash_function": "xxh3_poly",
        "hash_seed": 0,
        "permutation_seed": 1,
        "normalize": {"strip_punctuation": True},
    },
    "nemo": {
        "shingle": "char",
        "ngram": 24,
        "bands": 20,
        "rows": 13,
        "hash_function": "xxh3_poly",
        "hash_seed": 0,
        "permutation_seed": 1,
        "normalize": {"strip_punctuation": False},
    },
}


@config_dataclass
class MinHashConfig:
    enabled: bool = True
    preset: Literal["fineweb", "nemo"] = "fineweb"
    # Shingles are n consecutive words (whitespace-split normalized text) or n characters.
    shingle: Literal["word", "char"] = "word"
    ngram: Positive = 5
    bands: Positive = 14
    rows: Positive = 8
    # How a shingle becomes a 32-bit value (see ``shingles.py``): ``xxh3_poly`` hashes each word or
    # character with xxh3-64 and combines the n of them polynomially (vectorized); ``xxh32`` hashes
    # the shingle's UTF-8 bytes whole (one Python call per shingle: slower, the common convention).
    hash_function: Literal["xxh3_poly", "xxh32"] = "xxh3_poly"
    hash_seed: Seed = 0
    # Seed of the permutations, drawn exactly as ``datasketch.MinHash(seed=...)`` draws them.
    permutation_seed: Seed = 1
    normalize: NormalizeConfig = field(default_factory=lambda: NormalizeConfig(strip_punctuation=True))

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, ArgsKwargs) and data.kwargs and not data.args:
            return ArgsKwargs((), _with_preset(data.kwargs))
        if isinstance(data, dict):
            return _with_preset(data)
        return data

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def _with_preset(data: dict[str, Any]) -> dict[str, Any]:
    preset = MINHASH_PRESETS.get(data.get("preset", "fineweb"))
    if preset is None:
        return data  # the field validator names the bad preset
    merged = {**preset, **data}
    if isinstance(data.get("normalize"), dict):
        merged["normalize"] = {**preset["normalize"], **data["normalize"]}
    return merged


@config_dataclass
class DedupConfig:
    exact: ExactConfig = field(default_factory=ExactConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # Deduplicate within each value of this column; None: across the whole dataset. ``dump`` is
    # FineWeb's setting, each crawl dump on its own (readers fill ``dump`` from Common Crawl paths,
    # warcinfo records, a JSONL/Parquet field or ``read.dump``). Rows with no value form one group.
    group_by: str | None = None
    # At or below this many candidate edges, connected components run as one union-find on the
    # driver and the decisions are broadcast to the document blocks. Above it, both run distributed.
    union_find_edge_limit: Annotated[int, Field(ge=0)] = 1_000_000
    # Documents per call while computing keys (normalize, shingle, sign): bounds a key task's memory.
    batch_documents: Positive = 2000
    # Tasks computing the keys at once, one CPU each (two shares of the documents per task slot).
    key_workers: Positive = 2
    # Target size of one shuffle partition; it bounds the memory of every reduce task.
    partition_mb: Annotated[float, Field(gt=0)] = 64.0
    # Large-star/small-star converges in O(log^2 n) rounds; this only guards against a bug.
    max_rounds: Positive = 64
