"""Each alive document's bucket keys: its exact-duplicate key and one key per LSH band.

``DocumentKeyer`` runs over document batches (``map_batches`` on warm workers) and appends the keys
as list columns, so the documents and their keys are computed in one pass over the upstream pipeline.
``key_rows`` turns those lists into one row per (key, document): the index rows, and, as graph
nodes (``to_bucket_rows``), the input of the bucket shuffle.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.exact import exact_keys
from pipeline.dedup.index import INDEX_SCHEMA
from pipeline.dedup.lsh import BUCKET_SCHEMA, EXACT_BAND, band_keys
from pipeline.dedup.minhash import Signer
from pipeline.dedup.normalize import normalize
from pipeline.dedup.nodes import NEW, to_nodes
from pipeline.documents import alive_mask

KEY_HI, KEY_LO, KEY_BAND = "_dedup_key_hi", "_dedup_key_lo", "_dedup_band"
KEY_COLUMNS = (KEY_HI, KEY_LO, KEY_BAND)


class DocumentKeyer:
    """Appends three list columns to each batch: key halves and band (``EXACT_BAND`` for the exact key).

    Dropped documents get empty lists. A document whose text has no shingles gets no band keys.
    A callable class, so each worker process draws the permutations once and then takes batch after
    batch (``actor_pool.map_in_shares``).
    """

    def __init__(self, config: DedupConfig):
        self.config = config
        self.signer = Signer(config.minhash) if config.minhash.enabled else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        config = self.config
        alive = np.flatnonzero(alive_mask(batch).to_numpy(zero_copy_only=False))
        texts = batch["text"].take(alive)
        scopes = document_scopes(batch, alive, config.group_by)

        key_hi, key_lo, band, present = [], [], [], []
        if config.exact.enabled:
            hi, lo = exact_keys([normalize(text or "", config.exact.normalize) for text in texts.to_pylist()], scopes)
            key_hi.append(hi[:, None])
            key_lo.append(lo[:, None])
            band.append(np.full((len(texts), 1), EXACT_BAND, dtype=np.int16))
            present.append(np.ones((len(texts), 1), dtype=bool))
        if self.signer is not None:
            signatures, has_shingles = self.signer(texts)
            hi, lo = band_keys(signatures, config.minhash.rows, scope_hashes(scopes))
            key_hi.append(hi)
            key_lo.append(lo)
            band.append(np.broadcast_to(np.arange(config.minhash.bands, dtype=np.int16), hi.shape))
            present.append(np.broadcast_to(has_shingles[:, None], hi.shape))

        counts = np.zeros(batch.num_rows, dtype=np.int32)
        if present:
            mask = np.hstack(present)
            counts[alive] = mask.sum(axis=1)
            values = {name: np.hstack(parts)[mask] for name, parts in ((KEY_HI, key_hi), (KEY_LO, key_lo), (KEY_BAND, band))}
        else:
            values = {KEY_HI: np.empty(0, np.int64), KEY_LO: np.empty(0, np.int64), KEY_BAND: np.empty(0, np.int16)}
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        for name, flat in values.items():
            batch = batch.append_column(name, pa.ListArray.from_arrays(offsets, pa.array(flat)))
        return batch


def key_rows(batch: pa.Table) -> pa.Table:
    """One row per (bucket key, document) from a batch carrying the key columns: index rows."""
    parents = pc.list_parent_indices(batch[KEY_HI])
    return pa.table(
        {
            "key_hi": pc.list_flatten(batch[KEY_HI]),
            "key_lo": pc.list_flatten(batch[KEY_LO]),
            "band": pc.list_flatten(batch[KEY_BAND]),
            "id": pc.cast(batch["id"], pa.string()).take(parents),
        },
        schema=INDEX_SCHEMA,
    )


def to_bucket_rows(rows: pa.Table, rank: str) -> pa.Table:
    """Index rows as graph nodes of a rank: ``nodes.NEW`` for this build's, ``nodes.INDEXED`` for old."""
    return pa.table(
        {"key_hi": rows["key_hi"], "key_lo": rows["key_lo"], "band": rows["band"], "node": to_nodes(rows["id"], rank)},
        schema=BUCKET_SCHEMA,
    )


def new_bucket_rows(batch: pa.Table) -> pa.Table:
    """The graph-node rows of this build's documents, straight from a batch carrying the key columns."""
    return to_bucket_rows(key_rows(batch), NEW)


def document_scopes(batch: pa.Table, rows: np.ndarray, group_by: str | None) -> list[str]:
    """The dedup scope of each row: its ``group_by`` value as text ("" for null), or "" for all."""
    if group_by is None:
        return [""] * len(rows)
    values = pc.cast(batch[group_by].take(rows), pa.string()).to_pylist()
    return ["" if value is None else value for value in values]


def scope_hashes(scopes: list[str]) -> np.ndarray:
    distinct = {scope: xxhash.xxh3_64_intdigest(scope.encode()) for scope in set(scopes)}
    return np.fromiter(map(distinct.__getitem__, scopes), dtype=np.uint64, count=len(scopes))
