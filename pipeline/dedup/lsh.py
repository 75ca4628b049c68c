"""Locality-sensitive hashing: band keys, the S-curve they give, and candidate edges from buckets.

A signature of ``bands x rows`` values is cut into ``bands`` bands. Two documents whose Jaccard
similarity is ``s`` agree on one band with probability ``s**rows``, so they share at least one
bucket with probability ``1 - (1 - s**rows)**bands``: an S-shaped curve around
``(1/bands)**(1/rows)``.

A bucket key is 128 bits, kept as two int64 columns (``key_hi``, ``key_lo``): a hash of the band's
values, the band's index and the document's scope (its ``group_by`` value). 128 bits make a false
bucket collision unlikely even among trillions of keys. The exact-duplicate hash travels in the
same table as band ``EXACT_BAND``, so one shuffle groups both.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EXACT_BAND = -1
BUCKET_SCHEMA = pa.schema(
    [("key_hi", pa.int64()), ("key_lo", pa.int64()), ("band", pa.int16()), ("node", pa.string())]
)
EDGE_SCHEMA = pa.schema([("lo", pa.string()), ("hi", pa.string()), ("exact", pa.bool_())])

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HALF_SEEDS = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))  # digits of pi


def s_curve(bands: int, rows: int, similarities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9)) -> dict[float, float]:
    """Probability that two documents of Jaccard similarity ``s`` share at least one bucket."""
    return {s: 1.0 - (1.0 - s**rows) ** bands for s in similarities}


def describe_s_curve(bands: int, rows: int) -> str:
    curve = ", ".join(f"J={s:.1f}: {p:.3f}" for s, p in s_curve(bands, rows).items())
    threshold = (1.0 / bands) ** (1.0 / rows)
    return f"{bands} bands x {rows} rows: P(caught) {curve} (threshold ~{threshold:.2f})"


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def band_keys(signatures: np.ndarray, rows: int, scope_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(key_hi, key_lo)``, each ``[n, bands]`` int64, for ``signatures[n, bands * rows]``.

    Each half chains fmix64 over the band's values from its own seed; the band index and the
    scope enter the seed, so equal values in different bands or scopes never share a bucket.
    """
    n = len(signatures)
    bands = signatures.shape[1] // rows
    values = signatures.reshape(n, bands, rows).astype(np.uint64)
    band_index = np.arange(1, bands + 1, dtype=np.uint64) * _GOLDEN
    halves = []
    for seed in _HALF_SEEDS:
        h = fmix64(scope_hashes.astype(np.uint64)[:, None] ^ (band_index + seed))
        for row in range(rows):
            h = fmix64(h ^ values[:, :, row])
        halves.append(h.view(np.int64))
    return halves[0], halves[1]


def bucket_edges(bucket_rows: pa.Table) -> pa.Table:
    """Candidate edges from whole buckets: each member to the bucket's smallest node.

    ``bucket_rows`` holds every row of the buckets it contains (a hash partition on ``key_hi``).
    An edge is ``exact`` when it comes from an exact-hash bucket: then ``hi`` has an exact twin that
    ranks before it. Edges found in several buckets are listed once.
    """
    if bucket_rows.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    rows = bucket_rows.sort_by([("key_hi", "ascending"), ("key_lo", "ascending"), ("node", "ascending")])
    key_hi = rows["key_hi"].to_numpy()
    key_lo = rows["key_lo"].to_numpy()
    starts_bucket = np.ones(len(key_hi), dtype=bool)
    starts_bucket[1:] = (key_hi[1:] != key_hi[:-1]) | (key_lo[1:] != key_lo[:-1])
    first_of_bucket = np.maximum.accumulate(np.where(starts_bucket, np.arange(len(key_hi)), 0))
    nodes = rows["node"]
    smallest = nodes.take(pa.array(first_of_bucket))
    # A node listed twice in one bucket (an id given twice) is no edge to itself.
    member = pc.and_(pa.array(~starts_bucket), pc.not_equal(nodes, smallest))
    edges = pa.table(
        {
            "lo": pc.filter(smallest, member),
            "hi": pc.filter(nodes, member),
            "exact": pc.filter(pc.equal(rows["band"], EXACT_BAND), member),
        }
    )
    distinct = edges.group_by(["lo", "hi"], use_threads=False).aggregate([("exact", "any")])
    return pa.table(
        {"lo": distinct["lo"], "hi": distinct["hi"], "exact": distinct["exact_any"]}, schema=EDGE_SCHEMA
    )

