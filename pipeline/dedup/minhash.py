"""MinHash signatures of many texts at once, identical to ``datasketch.MinHash``'s.

datasketch 2.x's default ``affine32`` scheme: each 32-bit shingle hash is pre-mixed with the
MurmurHash3 finalizer, then permutation ``k`` maps it to ``a_k * h + b_k mod 2**32`` (``a_k`` odd,
so a bijection) and the signature keeps the minimum per permutation. We draw ``a`` and ``b``
exactly as ``MinHash(num_perm, seed)`` does and do the arithmetic for a whole batch of texts in
uint32 numpy arrays, where the wraparound is the modulo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa

from pipeline.dedup.config import MinHashConfig, NormalizeConfig
from pipeline.dedup.shingles import ShingleHasher

EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for a permutation that saw no shingle
# Shingles per block of permutation work: 112 x 8192 uint32 is 3.5 MB, about cache-sized.
_CHUNK_SHINGLES = 8192


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signing_normalization(config: MinHashConfig) -> NormalizeConfig:
    """``config.normalize`` less what cannot change the shingles: word units come from splitting on
    whitespace runs, so collapsing them first would be work for nothing."""
    return replace(config.normalize, collapse_whitespace=False) if config.shingle == "word" else config.normalize


class Signer:
    """Normalizes, shingles and signs batches of texts under one config (permutations drawn once)."""

    def __init__(self, config: MinHashConfig):
        self.config = config
        self.hasher = ShingleHasher(config, signing_normalization(config))
        a, b = permutations(config.num_perm, config.permutation_seed)
        # Column vectors: the permutation work runs as (num_perm x shingles) arrays whose long
        # axis is the contiguous one, several times faster in numpy than the transpose.
        self.a, self.b = a[:, None], b[:, None]

    def __call__(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(signatures[n, num_perm] uint32, has_shingles[n] bool)``. A text with no shingles
        (empty once normalized, or null) has an all-EMPTY signature and must not be bucketed."""
        hashes, counts = self.hasher(texts)
        return self.sign(hashes, counts), counts > 0

    def sign(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures from concatenated shingle hashes, ``counts[i]`` of them for text ``i``."""
        signatures = np.full((len(counts), len(self.a)), EMPTY, dtype=np.uint32)
        mixed = fmix32(hashes.astype(np.uint32, copy=False))
        ends = np.cumsum(counts)
        starts = ends - counts
        first = 0
        while first < len(counts):
            # A run of whole texts holding about _CHUNK_SHINGLES shingles (at least one text).
            stop = max(first + 1, int(np.searchsorted(ends, starts[first] + _CHUNK_SHINGLES, side="right")))
            texts = np.arange(first, stop)
            texts = texts[counts[texts] > 0]
            if len(texts):
                lo, hi = starts[first], ends[stop - 1]
                permuted = self.a * mixed[lo:hi]
                permuted += self.b
                signatures[texts] = np.minimum.reduceat(permuted, starts[texts] - lo, axis=1).T
            first = stop
        return signatures
