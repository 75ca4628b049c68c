"""Exact-duplicate keys: a 128-bit hash of each document's normalized text within its scope."""

from __future__ import annotations

import numpy as np
import xxhash


def exact_keys(normalized_texts: list[str], scopes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(key_hi, key_lo)`` int64 per text: xxh3-128 of ``scope NUL normalized-text``."""
    digests = b"".join(
        xxhash.xxh3_128_digest(f"{scope}\x00{text}".encode()) for scope, text in zip(scopes, normalized_texts)
    )
    halves = np.frombuffer(digests, dtype=">i8").reshape(-1, 2).astype(np.int64)
    return halves[:, 0], halves[:, 1]
