"""datatrove's FineWeb pipeline (its ``examples/fineweb.py``) on ``LocalPipelineExecutor``s, the
baseline of ``fineweb_chain.py``.

The same blocks and thresholds as the example: WARC reader, URL filter with datatrove's integrated
lists, extraction, fastText language ID (en, 0.65), Gopher repetition, Gopher quality, C4
(``filter_no_terminal_punct=False``), FineWeb quality, a JSONL checkpoint; then MinHash in four
stages (signatures, buckets, clusters, filter; word 5-grams, 14 buckets x 8 hashes, sha1, 64 bits)
and Parquet. Three adaptations, each for running offline here, none changing a decision:

- the language filter loads the lid.176.ftz model our project bundles (datatrove would download
  lid.176.bin), through fasttext-predict, whose Python floats are handed over as numpy values;
- the URL filter's domain suffix list is tldextract's bundled snapshot (it would download one);
- ``--extractor resiliparse`` runs our extraction function inside a datatrove ``BaseExtractor``
  (datatrove has no resiliparse block); ``trafilatura`` is datatrove's own ``Trafilatura`` block.

The cluster stage also writes each document's cluster id (``save_cluster_id``), which the
benchmark needs to compare decisions.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline import filters as dt
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.extractors.base import BaseExtractor
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.lid import FT176LID

from pipeline.extract import ExtractConfig, make_text_extractor
from pipeline.filters.language import bundled_model_path

# The FineWeb preset's duplicated-line threshold, as in filter_agreement.py.
FINEWEB_DUPLICATE_LINE_CHARS = 0.01
MINHASH = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64), num_buckets=14, hashes_per_bucket=8,
                        n_grams=5)


class BundledFT176(FT176LID):
    """datatrove's fastText LID on the bundled model, loaded in the worker that first uses it."""

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = NumpyScores(_FastText(model_path=str(bundled_model_path())))
        return self._model


class NumpyScores:
    """fasttext-predict's model, answering with numpy scores as datatrove's LID expects."""

    def __init__(self, model):
        self.model = model

    def predict(self, text: str, k: int = 1):
        labels, scores = self.model.predict(text, k=k)
        return labels, np.asarray(scores)


class BundledLanguageFilter(dt.LanguageFilter):
    def __new__(cls, *args, **kwargs):
        # Skips datatrove's check for the fasttext-numpy2-wheel distribution: fasttext-predict
        # provides the same `fasttext` module, and two must not share one environment.
        return object.__new__(cls)

    def __init__(self):
        super().__init__(languages=["en"], language_threshold=0.65)
        self.model = BundledFT176(["en"])


class OurExtraction(BaseExtractor):
    """Our extraction function (``pipeline.extract``) as a datatrove block, in datatrove's sandbox."""

    name = "⛏ ours"

    def __init__(self, extractor: str, timeout: float = 1):
        super().__init__(timeout)
        self.config = ExtractConfig(extractor=extractor)
        self._extract = None

    def extract(self, text: str) -> str:
        if self._extract is None:
            self._extract = make_text_extractor(self.config)
        return (self._extract(text) or "").strip()


def url_filter() -> dt.URLFilter:
    from tldextract import TLDExtract

    block = dt.URLFilter()  # FineWeb's: datatrove's integrated domain, URL and word lists
    block.tldextractor = TLDExtract(suffix_list_urls=())
    return block


@dataclass
class DatatroveOutcome:
    seconds: float
    stage_seconds: dict[str, float]
    after_filters: set[str]  # urls
    kept: set[str]
    cluster_of: dict[str, int]  # url -> minhash cluster, for every document in a cluster


def run_datatrove(warcs: Path, work: Path, files: int, workers: int, extractor: str) -> DatatroveOutcome:
    filtered, signatures, buckets, clusters = (work / name for name in ("filtered", "sigs", "buckets", "clusters"))
    output, removed, logs = work / "output", work / "removed", work / "logs"
    extraction = Trafilatura(favour_precision=True) if extractor == "trafilatura" else OurExtraction(extractor)
    stages = {
        "read + filters": LocalPipelineExecutor(pipeline=[
            WarcReader(str(warcs), glob_pattern="*.warc.gz"),
            url_filter(),
            extraction,
            BundledLanguageFilter(),
            dt.GopherRepetitionFilter(),
            dt.GopherQualityFilter(),
            dt.C4QualityFilter(filter_no_terminal_punct=False),
            dt.FineWebQualityFilter(char_duplicates_ratio=FINEWEB_DUPLICATE_LINE_CHARS),
            JsonlWriter(str(filtered)),
        ], tasks=files, workers=workers, logging_dir=str(logs / "filters")),
        "minhash signatures": LocalPipelineExecutor(pipeline=[
            JsonlReader(str(filtered)), MinhashDedupSignature(output_folder=str(signatures), config=MINHASH),
        ], tasks=files, workers=workers, logging_dir=str(logs / "signatures")),
        "minhash buckets": LocalPipelineExecutor(pipeline=[
            MinhashDedupBuckets(input_folder=str(signatures), output_folder=str(buckets), config=MINHASH),
        ], tasks=MINHASH.num_buckets, workers=workers, logging_dir=str(logs / "buckets")),
        "minhash clusters": LocalPipelineExecutor(pipeline=[
            MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=MINHASH,
                                save_cluster_id=True),
        ], tasks=1, logging_dir=str(logs / "clusters")),
        "minhash filter + parquet": LocalPipelineExecutor(pipeline=[
            JsonlReader(str(filtered)),
            MinhashDedupFilter(input_folder=str(clusters), exclusion_writer=JsonlWriter(str(removed)),
                               load_cluster_ids=True),
            ParquetWriter(str(output)),
        ], tasks=files, workers=workers, logging_dir=str(logs / "filter")),
    }
    stage_seconds = {}
    for name, executor in stages.items():
        started = time.perf_counter()
        executor.run()
        stage_seconds[name] = time.perf_counter() - started
    return DatatroveOutcome(sum(stage_seconds.values()), stage_seconds, *_decisions(filtered, output, removed))


def _decisions(filtered: Path, output: Path, removed: Path) -> tuple[set[str], set[str], dict[str, int]]:
    after_filters = {row["metadata"]["url"] for row in _jsonl(filtered)}
    cluster_of, kept = {}, set()
    for path in sorted(output.glob("*.parquet")):
        for metadata in pq.read_table(path, columns=["metadata"])["metadata"].to_pylist():
            kept.add(metadata["url"])
            if metadata.get("minhash_cluster_id", -1) != -1:
                cluster_of[metadata["url"]] = metadata["minhash_cluster_id"]
    for row in _jsonl(removed):
        cluster_of[row["metadata"]["url"]] = row["metadata"]["minhash_cluster_id"]
    return after_filters, kept, cluster_of


def _jsonl(folder: Path):
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                yield json.loads(line)
