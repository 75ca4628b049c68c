"""Shingles of normalized texts and their 32-bit hashes.

A shingle is ``ngram`` consecutive *units*: words (``text.split()``) or characters. A text with
fewer units than ``ngram`` has one shingle, all of its units; an empty text has none. Written out,
a word shingle is its words joined by single spaces and a character shingle is its characters.

Two hash functions, both named by the config with their seed:

- ``xxh3_poly``: each unit is hashed once with xxh3-64; the shingle's hash is the polynomial
  ``sum(u_k * P**(n-1-k)) mod 2**64`` of its unit hashes, of which we keep the top 32 bits (the
  best-mixed ones of a multiplicative hash). Units repeat far more than shingles, so a batch hashes
  each distinct unit once (``words.split_words`` normalizes, splits and dictionary-encodes a batch's
  words on its UTF-8 bytes) and numpy combines all windows at once: no Python call per word or
  shingle.
- ``xxh32``: xxh32 of the written-out shingle's UTF-8 bytes, one Python call per shingle.

``reference_hash`` computes either from one written-out shingle, the form that
``datasketch.MinHash(hashfunc=...)`` takes; the tests check that both paths agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
import pyarrow as pa
import xxhash

from pipeline.dedup.config import MinHashConfig, NormalizeConfig
from pipeline.dedup.normalize import normalize
from pipeline.dedup.words import split_words

POLY_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so multiplying by it is a bijection mod 2**64
_MASK64 = (1 << 64) - 1
_UNICODE_SIZE = 0x110000


def units(text: str, config: MinHashConfig) -> list[str]:
    return text.split() if config.shingle == "word" else list(text)


def shingle_strings(text_units: list[str], config: MinHashConfig) -> list[str]:
    """The written-out shingles of one text, in order, repeats kept."""
    join = (" " if config.shingle == "word" else "").join
    n = config.ngram
    if not text_units:
        return []
    if len(text_units) < n:
        return [join(text_units)]
    return [join(text_units[i : i + n]) for i in range(len(text_units) - n + 1)]


def reference_hash(config: MinHashConfig) -> Callable[[bytes], int]:
    """The hash of one written-out shingle (UTF-8 bytes), computed the slow, obvious way."""
    seed = config.hash_seed
    if config.hash_function == "xxh32":
        return lambda shingle: xxhash.xxh32_intdigest(shingle, seed)

    def poly(shingle: bytes) -> int:
        text = shingle.decode()
        value = 0
        for unit in text.split(" ") if config.shingle == "word" else text:
            value = (value * POLY_MULTIPLIER + xxhash.xxh3_64_intdigest(unit.encode(), seed)) & _MASK64
        return value >> 32

    return poly


class ShingleHasher:
    """Normalizes batches of texts and hashes their shingles; keeps the character hash table it builds."""

    def __init__(self, config: MinHashConfig, normalization: NormalizeConfig):
        self.config = config
        self.normalization = normalization
        if config.shingle == "char":  # a hash per code point, filled in as code points show up
            self._char_hash = np.zeros(_UNICODE_SIZE, dtype=np.uint64)
            self._char_known = np.zeros(_UNICODE_SIZE, dtype=bool)

    def __call__(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every shingle's 32-bit hash, text after text, and how many shingles each text has.
        Null texts have none."""
        if self.config.shingle == "word" and self.config.hash_function == "xxh3_poly":
            return _polynomial_windows(*self._word_hashes(texts), self.config.ngram)
        if not isinstance(texts, Sequence):
            texts = texts.to_pylist()
        texts = [normalize(text or "", self.normalization) for text in texts]
        if self.config.hash_function == "xxh32":
            per_text = [shingle_strings(units(text, self.config), self.config) for text in texts]
            seed = self.config.hash_seed
            flat = [xxhash.xxh32_intdigest(s.encode(), seed) for s in chain.from_iterable(per_text)]
            counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
            return np.array(flat, dtype=np.uint32), counts
        return _polynomial_windows(*self._char_hashes(texts), self.config.ngram)

    def _word_hashes(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        words = split_words(texts, self.normalization)
        seed = self.config.hash_seed
        distinct = np.array([xxhash.xxh3_64_intdigest(word, seed) for word in words.distinct], dtype=np.uint64)
        return distinct[words.indices], words.counts

    def _char_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        codepoints = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        seen = np.zeros(_UNICODE_SIZE, dtype=bool)
        seen[codepoints] = True
        seed = self.config.hash_seed
        for codepoint in np.flatnonzero(seen & ~self._char_known).tolist():
            self._char_hash[codepoint] = xxhash.xxh3_64_intdigest(chr(codepoint).encode(), seed)
            self._char_known[codepoint] = True
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        return self._char_hash[codepoints], lengths


def _polynomial_windows(x: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    unit_start = np.cumsum(lengths) - lengths
    out_start = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), dtype=np.uint64)

    full = lengths >= n
    if full.any():
        # Horner over every window of n units at once; windows that straddle two texts are computed
        # too and simply never picked below.
        span = len(x) - n + 1
        window = x[:span].copy()
        multiplier = np.uint64(POLY_MULTIPLIER)
        for k in range(1, n):
            window *= multiplier
            window += x[k : k + span]
        per_text = counts[full]
        offset_in_text = np.arange(per_text.sum()) - np.repeat(np.cumsum(per_text) - per_text, per_text)
        out[np.repeat(out_start[full], per_text) + offset_in_text] = window[
            np.repeat(unit_start[full], per_text) + offset_in_text
        ]
    for text in np.flatnonzero((lengths > 0) & ~full).tolist():  # shorter than one shingle: rare
        value = 0
        for unit_value in x[unit_start[text] : unit_start[text] + lengths[text]].tolist():
            value = (value * POLY_MULTIPLIER + unit_value) & _MASK64
        out[out_start[text]] = value
    return (out >> np.uint64(32)).astype(np.uint32), counts
