"""Batch inference on Ray Data: the engine on an actor pool, over any Parquet or JSON-lines dataset.

    read (Parquet / JSON lines) -> map_batches(Completer or Scorer, one model per actor)
        -> Parquet parts in a build folder of the output -> manifest.json (``pipeline/versions.py``)

Every input row becomes one output row with all its columns, plus the completion (or the score).
A row the model cannot serve (no prompt, a prompt longer than the context, no text to score) keeps
its place, with nulls and an ``error_code``; the manifest counts them by code. The job counts the
rows it reads separately and refuses to commit an output that has a different number of rows.

With a seed, each row samples with a seed derived from the job's seed and the row's prompt, so a
row's completion does not depend on which batch or worker it landed in.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from pydantic import Field

from model.inference import load_inference_model
from model.serve.complete import complete
from model.serve.engine import Engine, SamplingParams
from model.serve.scoring import SCORE_COLUMNS, DocumentScorer
from pipeline.actor_pool import actor_pool
from pipeline.config import config_dataclass, to_dict
from pipeline.documents import put_column
from pipeline.storage import absolute, filesystem
from pipeline.versions import MANIFEST, Build, VersionPaths, is_complete, open_version, publish, read_manifest, version_file

COMPLETION_COLUMNS = {"completion": pa.large_string(), "finish_reason": pa.string(), "prompt_tokens": pa.int64(),
                      "completion_tokens": pa.int64(), "error_code": pa.string(), "error": pa.string()}
DATA_DIR = "data"


@config_dataclass
class SamplingSettings:
    max_tokens: Annotated[int, Field(ge=1)] = 64
    temperature: Annotated[float, Field(ge=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@config_dataclass
class BatchSettings:
    model: str  # any reference of model/reference.py
    input: str  # a Parquet or JSON-lines file, folder or glob (local or s3://...)
    output: str  # the output folder, built beside itself and moved into place when complete
    mode: Literal["generate", "score"] = "generate"
    prompt_column: str = "prompt"
    text_column: str = "text"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    workers: Annotated[int, Field(ge=1)] = 1  # actors, one model and engine each
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    batch_rows: Annotated[int, Field(ge=1)] = 64  # rows per actor call: the engine's running batch
    overwrite: bool = False


class Completer:
    """``map_batches`` class: a ``completion`` (and its bookkeeping) for each row's prompt."""

    def __init__(self, settings: BatchSettings):
        self.settings = settings
        self.served = load_inference_model(settings.model, device=_device(settings))
        self.engine = Engine(self.served.model, max_batch_size=settings.batch_rows)
        sampling = settings.sampling
        self.params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                     top_k=sampling.top_k, top_p=sampling.top_p,
                                     stop_token_ids=self.served.stop_token_ids)

    def __call__(self, batch: pa.Table) -> pa.Table:
        prompts = batch[self.settings.prompt_column].to_pylist()
        seed = self.settings.sampling.seed
        params = [self.params if seed is None or prompt is None else replace(self.params, seed=_row_seed(seed, prompt))
                  for prompt in prompts]
        completions = complete(self.engine, self.served, prompts, params, self.settings.sampling.stop)
        columns = {"completion": [c.text for c in completions], "finish_reason": [c.finish_reason for c in completions],
                   "prompt_tokens": [c.prompt_tokens for c in completions],
                   "completion_tokens": [c.completion_tokens for c in completions],
                   "error_code": [c.error_code for c in completions], "error": [c.error for c in completions]}
        for column, values in columns.items():
            batch = put_column(batch, column, pa.array(values, COMPLETION_COLUMNS[column]))
        return batch


class Scorer:
    """``map_batches`` class: each row's log-likelihood and bits per byte under the model."""

    def __init__(self, settings: BatchSettings):
        self.column = settings.text_column
        self.scorer = DocumentScorer(load_inference_model(settings.model, device=_device(settings)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch[self.column]
        scored = self.scorer(pa.table({"text": pc.cast(texts, pa.large_string())}))
        for column in SCORE_COLUMNS:
            batch = put_column(batch, column, scored[column])
        missing = pc.invert(pc.is_valid(scored["bits_per_byte"]))
        return put_column(batch, "error_code", pc.if_else(missing, pa.scalar("no_text"), pa.scalar(None, pa.string())))


@dataclass
class BatchResult:
    manifest: dict[str, Any]
    seconds: float
    skipped: bool = False  # the output was complete already


def run_batch(settings: BatchSettings) -> BatchResult:
    """Run the job on the connected Ray; -> the manifest it committed."""
    start = time.perf_counter()
    paths = VersionPaths.of(absolute(settings.output))
    if is_complete(paths) and not settings.overwrite:
        return BatchResult(read_manifest(paths.final), 0.0, skipped=True)
    build = Build.start(paths)
    # Read first, whole: the actor pool may take every CPU, and reading tasks queued behind it would
    # wait forever. The input (prompts, texts) is small next to the compute each row costs.
    dataset = _read(settings.input).materialize()
    rows_read = dataset.count()  # counted apart from the output, so a lost row cannot go unseen
    if dataset.num_blocks() < min(settings.workers, rows_read):  # a block per actor at least
        dataset = dataset.repartition(min(settings.workers, rows_read)).materialize()
    worker = Completer if settings.mode == "generate" else Scorer
    results = dataset.map_batches(
        worker, fn_constructor_kwargs={"settings": settings}, batch_size=settings.batch_rows,
        batch_format="pyarrow", compute=actor_pool(max(1, min(settings.workers, dataset.num_blocks()))),
        num_cpus=settings.cpus_per_worker,
        num_gpus=settings.gpus_per_worker or None)
    results.write_parquet(f"{build.folder}/{DATA_DIR}")
    parts, hashes, totals = _describe_output(build, settings.mode)
    if totals["rows"] != rows_read:
        raise RuntimeError(f"read {rows_read} rows but wrote {totals['rows']}: not publishing {paths.final}")
    manifest = publish(build, {"settings": to_dict(settings), "rows": rows_read, "parts": parts, **totals}, hashes)
    return BatchResult(manifest, time.perf_counter() - start)


def _read(path: str) -> ray.data.Dataset:
    """A JSON-lines or Parquet file or folder, or a dataset version (its text shards)."""
    path = absolute(path).rstrip("/")
    if filesystem(path).exists(f"{path}/{MANIFEST}"):
        return ray.data.read_parquet([version_file(path, shard["path"]) for shard in open_version(path)["shards"]])
    plain = path.removesuffix(".gz")
    if plain.endswith((".jsonl", ".json")):
        return ray.data.read_json(path, lines=True)
    return ray.data.read_parquet(path)


def _describe_output(build: Build, mode: str) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Each written file with its rows (paths from the output folder), their sha256, and the counts
    over all of them."""
    folder = f"{build.folder}/{DATA_DIR}"
    fs = filesystem(folder)
    parts, hashes, errors = [], {}, Counter()
    totals: dict[str, Any] = {"rows": 0}
    sums = ("prompt_tokens", "completion_tokens") if mode == "generate" else ("scored_tokens", "text_bytes")
    totals.update({name: 0 for name in sums})
    log_likelihood = 0.0
    for path in sorted(fs.glob(f"{folder}/*.parquet")):
        data = fs.cat_file(path)
        table = pq.read_table(io.BytesIO(data), columns=["error_code", *sums, *(["log_likelihood"] if mode == "score" else [])])
        part = f"{build.name}/{DATA_DIR}/{path.rsplit('/', 1)[1]}"
        parts.append({"path": part, "rows": len(table)})
        hashes[part] = hashlib.sha256(data).hexdigest()
        totals["rows"] += len(table)
        for name in sums:
            totals[name] += int(pc.sum(table[name]).as_py() or 0)
        errors.update(code for code in table["error_code"].to_pylist() if code is not None)
        if mode == "score":
            log_likelihood += float(pc.sum(table["log_likelihood"]).as_py() or 0.0)
    totals["errors"] = dict(sorted(errors.items()))
    if mode == "score" and totals["text_bytes"]:
        totals["bits_per_byte"] = -log_likelihood / (math.log(2) * totals["text_bytes"])
    return parts, hashes, totals


def _row_seed(seed: int, prompt: Any) -> int:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # a non-negative int64


def _device(settings: BatchSettings) -> str:
    return "cuda" if settings.gpus_per_worker else "cpu"
