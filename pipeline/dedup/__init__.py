"""Exact and MinHash-LSH deduplication on Ray Data, with distributed connected components.

    from pipeline.dedup import DedupConfig, deduplicate, write_index

    result = deduplicate(documents, DedupConfig(), previous_index=["<root>/v1/<build>/dedup_index"])
    result.documents          # every row; removals marked "dedup:exact_dup" / "dedup:near_dup"
    write_index(result.index, "<root>/v2/<build>/dedup_index", config)   # the new documents' part

Modules, in the order data flows: ``normalize``, ``exact``, ``words`` (a batch's normalized words,
on its UTF-8 bytes), ``shingles``, ``minhash``, ``lsh``, ``keys`` (per-document keys),
``components`` (union-find and star rounds), ``decisions``, ``index`` (incremental), ``shuffle``
(Ray Data plumbing), ``run`` (``deduplicate``).
"""

from pipeline.dedup.config import DedupConfig, ExactConfig, MinHashConfig, NormalizeConfig
from pipeline.dedup.decisions import CLUSTER_ID, CLUSTER_SIZE, EXACT_DUP, NEAR_DUP
from pipeline.dedup.index import INDEX_FOLDER, write_index
from pipeline.dedup.run import DedupResult, deduplicate

__all__ = [
    "CLUSTER_ID",
    "CLUSTER_SIZE",
    "EXACT_DUP",
    "INDEX_FOLDER",
    "NEAR_DUP",
    "DedupConfig",
    "DedupResult",
    "ExactConfig",
    "MinHashConfig",
    "NormalizeConfig",
    "deduplicate",
    "write_index",
]
