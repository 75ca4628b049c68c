"""Token shards -> training batches on every Ray Train worker, resumable to the exact batch.

Why not simply ``streaming_split`` the shards: Ray Data hands blocks to whichever worker asks first,
so which worker sees which sequence, and in what order, changes from run to run, and a restarted
run could only guess what it had trained on. Here the order is a pure function of the manifests,
the seed and the world size:

- **Epoch order.** A split's sequences sit in chunks (one Parquet row group each). Epoch ``e`` of
  source ``s`` visits the chunks in a permutation seeded by ``(seed, s, e)`` and the rows inside a
  chunk in one seeded by ``(seed, s, e, chunk)``: a different shuffle every epoch.
- **Each worker's part.** Worker ``r`` of ``W`` takes rows ``[r*S, (r+1)*S)`` of that order,
  ``S = sequences // W``: every worker reads only its ~1/W of the data and gets as many rows as the
  others (at most ``W - 1`` rows sit an epoch out, different ones each epoch).
- **Ray Data does the reading.** The trainer's dataset for a source is the list of its epochs the run
  will reach (the plan). ``TokenDataConfig`` turns it, for each worker, into that worker's
  row-group slices read in order (``preserve_order``, one task per epoch), which
  ``get_dataset_shard`` hands to the worker and ``iter_torch_batches`` streams: prefetched, turned
  into ``input_ids``/``targets`` in Ray's threads, pinned when there is a GPU.
- **Mixture.** Each micro-step takes ``multinomial(micro_batch_size, weights)`` rows from the
  sources, drawn by a generator seeded by ``(seed, step // 1024)``: the same counts on every worker
  and every rerun, in the configured proportions. A single source takes every row from itself.
- **Resume.** The state is the micro-step and the rows taken from each source. A restarted worker
  streams its part from the start again and discards the rows it had taken (reading, no training:
  cheap next to a step), so it continues with the next unseen batch: none repeated, none skipped.
  Exact resume needs the same seed, micro-batch size, world size and sources; a mismatch is an error.
  (Ray Train builds the datasets before the workers read their checkpoint, so the plan cannot start
  at the resume point; the discarded rows are read again at the loader's speed, about 10M tokens/s
  per worker on a shared 2-core machine: benchmarks/results/tokens.md.)

Validation reads each source's val split in manifest order (its first ``val_sequences`` if set),
split across workers, so the validation set is the same whatever the world size.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import field
from pathlib import PurePosixPath
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import ray.train
import torch
from pydantic import Field
from ray.data.collate_fn import ArrowBatchCollateFn

from pipeline.config import ConfigError, config_dataclass
from pipeline.shards import MANIFEST, filesystem
from pipeline.tokenize import FORMAT

IGNORE_INDEX = -100  # targets the loss skips: the padding after a shard's last real token
TOKEN_COLUMNS = ["sequence_id", "tokens", "n_tokens"]
_MIXTURE_KEY = 0x3117


@config_dataclass
class TokenSourceConfig:
    path: str  # a token dataset folder (with its manifest.json), local or fsspec URL
    weight: Annotated[float, Field(gt=0)] = 1.0
    name: str | None = None  # defaults to the folder name


@config_dataclass
class LoaderConfig:
    sources: list[TokenSourceConfig] = field(default_factory=list)
    prefetch_batches: Annotated[int, Field(ge=0)] = 2
    # Validate on each source's first N val sequences (manifest order); None: all of them.
    val_sequences: Annotated[int, Field(ge=1)] | None = None


# ---------------------------------------------------------------------------------------------
# Sources and the read plan: pure functions of the manifests


@functools.cache  # a committed token folder never changes: read each manifest once per process
def token_manifest(root: str) -> dict[str, Any]:
    with filesystem(root).open(f"{root}/{MANIFEST}", "r") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{root}: not a token dataset ({MANIFEST} has format {manifest.get('format')!r})")
    return manifest


def sources(config: LoaderConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, folder, manifest) per configured source; they must share tokenizer and context length."""
    if not config.sources:
        raise ConfigError("data.sources: name at least one token dataset")
    found = []
    for source in config.sources:
        root = source.path.rstrip("/")
        found.append((source.name or PurePosixPath(root).name, root, token_manifest(root)))
    if len({name for name, _, _ in found}) != len(found):
        raise ConfigError("data.sources: two sources have the same name; give each a name")
    first_name, _, first = found[0]
    for name, _, manifest in found[1:]:
        for key in ("tokenizer", "context_length"):
            if manifest[key] != first[key]:
                raise ConfigError(f"data.sources: {name!r} has another {key} than {first_name!r}")
    return found


def read_token_manifest(config: LoaderConfig) -> dict[str, Any]:
    """The manifest of the first source (all sources share its tokenizer and context length)."""
    return sources(config)[0][2]


def chunks(root: str, split: str) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of every row group of a split, in manifest order."""
    manifest = token_manifest(root)
    per_group = manifest["row_group_rows"]
    found = []
    for shard in manifest["splits"][split]["shards"]:
        for group in range(math.ceil(shard["sequences"] / per_group)):
            found.append((f"{root}/{shard['path']}", group, min(per_group, shard["sequences"] - group * per_group)))
    return found


def epoch_slices(chunk_rows: np.ndarray, part: tuple[int, int], order_key: list[int] | None) -> list[tuple[int, int, int]]:
    """The (chunk, start, end) slices that make up rows ``[part)`` of one epoch's order.

    ``order_key`` seeds the chunk permutation (None: manifest order). ``start:end`` index the
    chunk's own row permutation (see ``read_slice``).
    """
    order = np.random.default_rng(order_key).permutation(len(chunk_rows)) if order_key else np.arange(len(chunk_rows))
    ends = np.cumsum(chunk_rows[order])
    begin, end = part
    slices = []
    for position in range(int(np.searchsorted(ends, begin, side="right")), len(order)):
        chunk_start = int(ends[position] - chunk_rows[order[position]])
        if chunk_start >= end:
            break
        slices.append((int(order[position]), max(begin, chunk_start) - chunk_start, min(end, int(ends[position])) - chunk_start))
    return slices


def worker_part(total: int, rank: int, world_size: int, shuffled: bool) -> tuple[int, int]:
    """Training: equal parts of ``total // W`` rows. Validation: every row, parts differing by one."""
    if shuffled:
        size = total // world_size
        return rank * size, (rank + 1) * size
    return rank * total // world_size, (rank + 1) * total // world_size


def worker_slices(plan_row: dict[str, Any], rank: int, world_size: int) -> list[dict[str, Any]]:
    """One plan row (a source's split, one epoch) -> this worker's row-group slices, in order."""
    found = chunks(plan_row["root"], plan_row["split"])
    chunk_rows = np.array([rows for _, _, rows in found], dtype=np.int64)
    total = int(chunk_rows.sum())
    if plan_row["limit"] >= 0:
        total = min(total, plan_row["limit"])
    shuffled = plan_row["shuffle"]
    if shuffled and total < world_size:
        raise ValueError(f"{plan_row['root']}: {total} {plan_row['split']} sequences cannot feed {world_size} workers")
    epoch_key = [plan_row["seed"], plan_row["source"], plan_row["epoch"]] if shuffled else None
    slices = []
    for chunk, start, end in epoch_slices(chunk_rows, worker_part(total, rank, world_size, shuffled), epoch_key):
        path, group, rows = found[chunk]
        slices.append({"source": plan_row["source"], "path": path, "row_group": group, "rows": rows,
                       "start": start, "end": end, "row_order_key": [*epoch_key, chunk] if epoch_key else None})
    return slices


def read_slice(piece: dict[str, Any]) -> pa.Table:
    """The token rows one slice names, in its (seeded) row order."""
    with filesystem(piece["path"]).open(piece["path"], "rb") as f:
        rows = pq.ParquetFile(f).read_row_group(piece["row_group"], columns=TOKEN_COLUMNS)
    key = piece["row_order_key"]
    order = np.random.default_rng(key).permutation(piece["rows"]) if key else np.arange(piece["rows"])
    rows = rows.take(order[piece["start"] : piece["end"]])
    return rows.append_column("source", pa.array(np.full(len(rows), piece["source"], np.int64)))


def read_worker_part(plan: pa.Table, rank: int, world_size: int) -> Iterator[pa.Table]:
    """``map_batches`` function: plan rows -> this worker's token rows, slice after slice."""
    for plan_row in plan.to_pylist():
        for piece in worker_slices(plan_row, rank, world_size):
            yield read_slice(piece)


MIXTURE_BLOCK = 1024  # micro-steps whose draws come from one generator


def mixture_counts(weights: list[float], micro_batch_size: int, block: int, seed: int) -> np.ndarray:
    """Rows to take from each source at the micro-steps of ``block``: shape (MIXTURE_BLOCK, sources).

    Seeded by ``(seed, block)``: the same on every worker and every rerun, and any step's draw is
    found without replaying the steps before it.
    """
    probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
    return np.random.default_rng([seed, _MIXTURE_KEY, block]).multinomial(micro_batch_size, probabilities, size=MIXTURE_BLOCK)


def rows_drawn(weights: list[float], micro_batch_size: int, micro_steps: int, seed: int) -> np.ndarray:
    """Rows each source gives one worker over the first ``micro_steps`` micro-steps."""
    if len(weights) == 1:
        return np.array([micro_batch_size * micro_steps])
    total = np.zeros(len(weights), np.int64)
    for block in range(math.ceil(micro_steps / MIXTURE_BLOCK)):
        counts = mixture_counts(weights, micro_batch_size, block, seed)
        total += counts[: micro_steps - block * MIXTURE_BLOCK].sum(axis=0)
    return total


def model_batch(rows: pa.Table) -> dict[str, torch.Tensor]:
    """Token rows -> ``input_ids`` and next-token ``targets`` (int64), the padded tail masked out."""
    windows = rows["tokens"].combine_chunks()
    tokens = windows.flatten().to_numpy().reshape(len(rows), windows.type.list_size).astype(np.int64)
    real = rows["n_tokens"].to_numpy()
    targets = tokens[:, 1:].copy()
    targets[np.arange(1, tokens.shape[1])[None, :] >= real[:, None]] = IGNORE_INDEX
    return {
        "input_ids": torch.from_numpy(tokens[:, :-1]),
        "targets": torch.from_numpy(targets),
        "sequence_id": torch.tensor(rows["sequence_id"].to_numpy()),
        "source": torch.tensor(rows["source"].to_numpy()),
    }


class ModelBatchCollate(ArrowBatchCollateFn):
    """Builds the model's batch in Ray's prefetch threads, where Ray also pins it when there is a GPU."""

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        if "tokens" not in batch.column_names:
            raise RuntimeError("got plan rows, not token rows: pass dataset_config=data.dataset_config() to the TorchTrainer")
        return model_batch(batch)


# ---------------------------------------------------------------------------------------------
# Driver side: what the TorchTrainer gets


def ray_datasets(
    config: LoaderConfig, seed: int, *, world_size: int, micro_batch_size: int, micro_steps: int
) -> dict[str, ray.data.Dataset]:
    """The plans for ``TorchTrainer(datasets=...)``: ``train:<source>`` each, and ``val``.

    A training plan lists the epochs of its source that ``micro_steps`` micro-batches per worker
    will reach. Pass ``dataset_config()`` beside them: it turns each plan into each worker's rows.
    """
    found = {}
    val_rows = []
    named = sources(config)
    drawn = rows_drawn([source.weight for source in config.sources], micro_batch_size, micro_steps, seed)
    for index, ((name, root, manifest), rows) in enumerate(zip(named, drawn)):
        per_worker = manifest["splits"]["train"]["sequences"] // world_size
        if per_worker == 0:
            raise ConfigError(f"data.sources: {name!r} has fewer train sequences than the {world_size} workers")
        plan_row = {"source": index, "root": root, "split": "train", "seed": seed, "shuffle": True, "limit": -1}
        epochs = max(1, math.ceil(int(rows) / per_worker))
        # One block per epoch: each epoch is read by its own task, and only when the stream gets there.
        found[f"train:{name}"] = ray.data.from_items([{**plan_row, "epoch": e} for e in range(epochs)], override_num_blocks=epochs)
        if manifest["splits"]["val"]["sequences"]:
            val_rows.append({**plan_row, "split": "val", "shuffle": False, "limit": config.val_sequences or -1, "epoch": 0})
    if val_rows:
        found["val"] = ray.data.from_items(val_rows, override_num_blocks=len(val_rows))
    return found


def dataset_config() -> ray.train.DataConfig:
    """The ``TorchTrainer(dataset_config=...)`` for ``ray_datasets``."""
    return TokenDataConfig()


class TokenDataConfig(ray.train.DataConfig):
    """Gives each worker its own part of every plan (``train:*`` and ``val``); other datasets as usual."""

    # Blocks of token rows small enough that the first batch comes early and prefetching stays cheap.
    BLOCK_BYTES = 4 << 20

    @staticmethod
    def is_plan(name: str) -> bool:
        return name == "val" or name.startswith("train:")

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        others = {name: ds for name, ds in datasets.items() if not self.is_plan(name)}
        output = [{} for _ in range(world_size)]
        if others:
            output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        for name, plan in datasets.items():
            if not self.is_plan(name):
                continue
            for rank in range(world_size):
                rows = plan.map_batches(
                    read_worker_part, fn_kwargs={"rank": rank, "world_size": world_size}, batch_size=1, batch_format="pyarrow"
                )
                rows.context.execution_options = self._resolve_execution_options(name)
                rows.context.execution_options.preserve_order = True  # the plan's order is the order
                rows.context.target_max_block_size = self.BLOCK_BYTES
                output[rank][name] = rows.iterator()
        return output


# ---------------------------------------------------------------------------------------------
# Worker side


class _RowStream:
    """One source's rows for this worker, taken a few at a time, after discarding the first ``skip``."""

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]], skip: int, name: str):
        self.batches, self.skip, self.name = batches, skip, name
        self.head: dict[str, torch.Tensor] | None = None
        self.offset = 0

    def take(self, n: int) -> list[dict[str, torch.Tensor]]:
        parts = []
        while n > 0:
            if self.head is None or self.offset == len(self.head["input_ids"]):
                try:
                    self.head, self.offset = next(self.batches), 0
                except StopIteration:
                    raise RuntimeError(f"source {self.name!r}: its plan is used up; it was made for fewer micro_steps") from None
            available = len(self.head["input_ids"]) - self.offset
            if self.skip:
                skipped = min(self.skip, available)
                self.offset, self.skip = self.offset + skipped, self.skip - skipped
                continue
            taken = min(n, available)
            parts.append({key: value[self.offset : self.offset + taken] for key, value in self.head.items()})
            self.offset, n = self.offset + taken, n - taken
        return parts


class TrainBatches:
    """This worker's endless stream of training micro-batches, and its position (``state_dict``).

    Each batch holds ``input_ids`` and ``targets`` (micro_batch_size, context_length) int64,
    ``sequence_id`` and ``source`` (the source's index) per row, on the CPU (pinned with a GPU).
    """

    def __init__(self, config: LoaderConfig, micro_batch_size: int, seed: int, state: dict[str, Any] | None = None):
        self.config, self.micro_batch_size, self.seed = config, micro_batch_size, seed
        self.sources = sources(config)
        self.weights = [source.weight for source in config.sources]
        self.world_size = ray.train.get_context().get_world_size()
        self.context_length = self.sources[0][2]["context_length"]
        self.step = 0
        self.positions = {name: 0 for name, _, _ in self.sources}
        self._block: tuple[int, np.ndarray | None] = (-1, None)
        if state is not None:
            self.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        streams = [
            _RowStream(_torch_batches(f"train:{name}", self.micro_batch_size, self.config), self.positions[name], name)
            for name, _, _ in self.sources
        ]
        while True:
            parts = []
            for (name, _, _), stream, count in zip(self.sources, streams, self._counts(self.step)):
                parts += stream.take(int(count))
                self.positions[name] += int(count)
            self.step += 1
            yield parts[0] if len(parts) == 1 else _concatenate(parts)

    def _counts(self, step: int) -> np.ndarray:
        if len(self.weights) == 1:
            return np.array([self.micro_batch_size])
        block, offset = divmod(step, MIXTURE_BLOCK)
        if self._block[0] != block:
            self._block = (block, mixture_counts(self.weights, self.micro_batch_size, block, self.seed))
        return self._block[1][offset]

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is (micro-steps and rows taken per source), and what it must resume with."""
        return {
            "step": self.step,
            "positions": dict(self.positions),
            "world_size": self.world_size,
            "micro_batch_size": self.micro_batch_size,
            "seed": self.seed,
            "sources": [[name, weight] for (name, _, _), weight in zip(self.sources, self.weights)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self.state_dict()
        for key in ("world_size", "micro_batch_size", "seed", "sources"):
            if state[key] != expected[key]:
                raise ValueError(f"loader state: {key} was {state[key]!r}, is now {expected[key]!r}; exact resume needs the same")
        self.step, self.positions = state["step"], dict(state["positions"])

    def tokens_per_source(self) -> dict[str, int]:
        """Target positions drawn so far from each source, summed over all workers."""
        return {name: rows * self.world_size * self.context_length for name, rows in self.positions.items()}


def _concatenate(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    # A mixed batch is a fresh copy: pin it again so the copy to the GPU stays asynchronous.
    return {key: value.pin_memory() for key, value in joined.items()} if torch.cuda.is_available() else joined


def train_batches(config: LoaderConfig, micro_batch_size: int, state: dict[str, Any] | None, seed: int) -> TrainBatches:
    """In a Ray Train worker: the training micro-batches, from ``state`` (a ``state_dict()``) if given."""
    return TrainBatches(config, micro_batch_size, seed, state)


def validation_batches(config: LoaderConfig, micro_batch_size: int, max_batches: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """In a Ray Train worker: its share of the validation rows, always in the same order.

    Workers may get a batch more or less than each other: sum the loss and the target count on
    each worker and all-reduce the sums once at the end. ``max_batches`` (per worker) cuts it short;
    ``LoaderConfig.val_sequences`` does so with the same rows for any world size.
    """
    if not any(manifest["splits"]["val"]["sequences"] for _, _, manifest in sources(config)):
        return
    for index, batch in enumerate(_torch_batches("val", micro_batch_size, config)):
        if max_batches is not None and index >= max_batches:
            return
        yield batch


def _torch_batches(name: str, batch_size: int, config: LoaderConfig) -> Iterator[dict[str, torch.Tensor]]:
    shard = ray.train.get_dataset_shard(name)
    if shard is None:
        raise RuntimeError(f"no dataset {name!r}: pass datasets=data.ray_datasets(...) to the TorchTrainer")
    yield from shard.iter_torch_batches(
        batch_size=batch_size,
        prefetch_batches=config.prefetch_batches,
        collate_fn=ModelBatchCollate(),
        device="cpu",  # the training loop moves batches to its device, counting targets on the CPU first
        pin_memory=torch.cuda.is_available(),
    )
