"""Token shards -> training batches on every Ray Train worker, resumable to the exact batch.

Why not simply ``streaming_split`` the shards: Ray Data hands blocks to whichever worker asks first,
so which worker sees which sequence, and in what order, changes from run to run, and a restarted
run could only guess what it had trained on. Here the order is a pure function of the manifests,
the seed and the global batch, and only who reads what depends on the number of workers:

- **Each source's stream.** A split's sequences sit in chunks (one Parquet row group each). Epoch
  ``e`` of source ``s`` visits the chunks in a permutation seeded by ``(seed, s, e)`` and the rows
  inside a chunk in one seeded by ``(seed, s, e, chunk)``: a different shuffle every epoch, and the
  epochs one after the other make the source's endless stream.
- **Each step's global batch.** Optimizer step ``k`` takes the next ``c[k, s]`` rows of each
  source's stream: all ``global_batch`` rows from a single source; for a mixture,
  ``multinomial(global_batch, weights)`` drawn by a generator seeded by ``(seed, k // 1024)``. The
  rows of a step are therefore the same for any number of workers.
- **Each worker's part.** A step's rows, sources side by side, are cut into equal parts, one per
  data-parallel rank, and each rank cuts its part into micro-batches. Under a pipeline, the workers
  of one pipeline are one data-parallel rank and read the same rows.
- **Ray Data does the reading.** The trainer's dataset for a source is the list of its epochs the run
  will reach (the plan). ``TokenDataConfig`` turns it, for each worker, into the rows that worker
  takes, tagged with their step and read chunk by chunk in stream order (``preserve_order``, one
  task per epoch), which ``get_dataset_shard`` hands to the worker and ``iter_torch_batches``
  streams: prefetched, turned into ``input_ids``/``targets`` in Ray's threads, pinned with a GPU.
- **Resume.** The state is the optimizer step: a position in the global stream. A resumed worker
  streams its rows from the start again and discards those tagged with earlier steps (reading, no
  training: cheap next to a step), so it continues with the next unseen batch, none repeated, none
  skipped, on any number of workers and with any micro-batch size. Exact resume needs the same
  seed, global batch and sources; a mismatch is an error. (Ray Train builds the datasets before the
  workers read their checkpoint, so the plan cannot start at the resume point; the discarded rows
  are read again at the loader's speed, about 10M tokens/s per worker on a shared 2-core machine:
  benchmarks/results/tokens.md.)

Validation reads each source's val split in manifest order (its first ``val_sequences`` if set),
split across workers, so the validation set is the same whatever the world size.
"""

from __future__ import annotations

import functools
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
from pipeline.storage import filesystem
from pipeline.versions import MANIFEST, open_version, version_file
from pipeline.tokenize import FORMAT

IGNORE_INDEX = -100  # targets the loss skips: the padding after a shard's last real token
TOKEN_COLUMNS = ["sequence_id", "tokens", "n_tokens"]
_MIXTURE_KEY = 0x3117
MIXTURE_BLOCK = 1024  # steps whose draws come from one generator


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


@functools.cache  # a published token version never changes: read each manifest once per process
def token_manifest(root: str) -> dict[str, Any]:
    manifest = open_version(root)  # complete, or it says which files are missing
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
            found.append((version_file(root, shard["path"]), group, min(per_group, shard["sequences"] - group * per_group)))
    return found


def step_counts(weights: list[float], global_batch: int, steps: int, seed: int) -> np.ndarray:
    """Rows each source gives the global batch of each optimizer step: shape (steps, sources).

    One source gives all ``global_batch`` rows. A mixture draws ``multinomial(global_batch, weights)``
    per step from a generator seeded by ``(seed, step // MIXTURE_BLOCK)``: the same on every worker,
    every rerun and every world size, and any step's draw is found without replaying the others.
    """
    if len(weights) == 1:
        return np.full((steps, 1), global_batch, np.int64)
    probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
    blocks = [np.random.default_rng([seed, _MIXTURE_KEY, block]).multinomial(global_batch, probabilities, size=MIXTURE_BLOCK)
              for block in range(math.ceil(steps / MIXTURE_BLOCK))]
    return np.concatenate(blocks)[:steps].astype(np.int64) if blocks else np.zeros((0, len(weights)), np.int64)


def rank_intervals(counts: np.ndarray, source: int, rank: int, ranks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``source``'s stream that data-parallel ``rank`` of ``ranks`` takes: (starts, ends, steps).

    A step's global batch is its sources' rows side by side (source 0's first); rank ``r`` takes its
    ``r``-th equal part. Which rows make a step does not depend on ``ranks``; only who takes them does.
    """
    share = int(counts[0].sum()) // ranks if len(counts) else 0
    taken = counts[:, source]
    offsets = (np.cumsum(counts, axis=1) - counts)[:, source]  # where the source starts in each step's batch
    stream_starts = np.cumsum(taken) - taken  # where each step starts in the source's own stream
    low = np.clip(rank * share - offsets, 0, taken)
    high = np.clip((rank + 1) * share - offsets, 0, taken)
    kept = high > low
    return stream_starts[kept] + low[kept], stream_starts[kept] + high[kept], np.flatnonzero(kept)


def epoch_steps(plan_row: dict[str, Any], epoch_rows: int, rank: int, ranks: int) -> np.ndarray:
    """For each position of one epoch's order: the step at which ``rank`` takes it, or -1."""
    counts = step_counts(plan_row["weights"], plan_row["global_batch"], plan_row["steps"], plan_row["seed"])
    starts, ends, steps = rank_intervals(counts, plan_row["source"], rank, ranks)
    begin = plan_row["epoch"] * epoch_rows
    starts, ends = np.clip(starts - begin, 0, epoch_rows), np.clip(ends - begin, 0, epoch_rows)
    lengths = ends - starts
    tags = np.full(epoch_rows, -1, np.int64)
    positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    tags[positions] = np.repeat(steps, lengths)
    return tags


def worker_part(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Validation: every row in manifest order, in parts that differ by at most one row."""
    return rank * total // world_size, (rank + 1) * total // world_size


def read_chunk(path: str, row_group: int, columns: list[str] = TOKEN_COLUMNS) -> pa.Table:
    with filesystem(path).open(path, "rb") as f:
        return pq.ParquetFile(f).read_row_group(row_group, columns=columns)


def read_train_epoch(plan_row: dict[str, Any], rank: int, ranks: int) -> Iterator[pa.Table]:
    """One epoch of one source: the rows ``rank`` takes, in stream order, each tagged with its step.

    The epoch's order is its chunks in a permutation seeded by ``(seed, source, epoch)``, and each
    chunk's rows in one seeded by ``(seed, source, epoch, chunk)``. Chunks holding none of this
    rank's rows are not read.
    """
    found = chunks(plan_row["root"], "train")
    chunk_rows = np.array([rows for _, _, rows in found], dtype=np.int64)
    tags = epoch_steps(plan_row, int(chunk_rows.sum()), rank, ranks)
    epoch_key = [plan_row["seed"], plan_row["source"], plan_row["epoch"]]
    start = 0
    for chunk in np.random.default_rng(epoch_key).permutation(len(found)):
        path, group, rows = found[chunk]
        chunk_tags = tags[start : start + rows]
        start += rows
        wanted = np.flatnonzero(chunk_tags >= 0)
        if not len(wanted):
            continue
        order = np.random.default_rng([*epoch_key, int(chunk)]).permutation(rows)
        table = read_chunk(path, group).take(order[wanted])
        table = table.append_column("source", pa.array(np.full(len(table), plan_row["source"], np.int64)))
        yield table.append_column("step", pa.array(chunk_tags[wanted]))


def read_validation(plan_row: dict[str, Any], rank: int, ranks: int) -> Iterator[pa.Table]:
    """This rank's part of a source's val split (its first ``limit`` rows if set), in manifest order."""
    found = chunks(plan_row["root"], "val")
    total = sum(rows for _, _, rows in found)
    if plan_row["limit"] >= 0:
        total = min(total, plan_row["limit"])
    begin, end = worker_part(total, rank, ranks)
    start = 0
    for path, group, rows in found:
        low, high = max(begin, start), min(end, start + rows)
        if low < high:
            table = read_chunk(path, group).slice(low - start, high - low)
            table = table.append_column("source", pa.array(np.full(len(table), plan_row["source"], np.int64)))
            yield table.append_column("step", pa.array(np.zeros(len(table), np.int64)))
        start += rows


def read_worker_part(plan: pa.Table, rank: int, world_size: int) -> Iterator[pa.Table]:
    """``map_batches`` function: plan rows -> this worker's token rows. Workers of one pipeline
    (``stages`` in a row) read the same rows: its data-parallel rank is ``rank // stages``."""
    for plan_row in plan.to_pylist():
        data_rank, data_ranks = rank // plan_row["stages"], world_size // plan_row["stages"]
        if plan_row["split"] == "train":
            yield from read_train_epoch(plan_row, data_rank, data_ranks)
        else:
            yield from read_validation(plan_row, data_rank, data_ranks)


def model_batch(rows: pa.Table) -> dict[str, torch.Tensor]:
    """Token rows -> ``input_ids`` and next-token ``targets`` (int64), the padded tail masked out."""
    windows = rows["tokens"].combine_chunks()
    tokens = windows.flatten().to_numpy().reshape(len(rows), windows.type.list_size).astype(np.int64)
    real = rows["n_tokens"].to_numpy()
    targets = tokens[:, 1:].copy()
    targets[np.arange(1, tokens.shape[1])[None, :] >= real[:, None]] = IGNORE_INDEX
    batch = {
        "input_ids": torch.from_numpy(tokens[:, :-1]),
        "targets": torch.from_numpy(targets),
        "sequence_id": torch.tensor(rows["sequence_id"].to_numpy()),
        "source": torch.tensor(rows["source"].to_numpy()),
    }
    if "step" in rows.column_names:  # the optimizer step a training row belongs to
        batch["step"] = torch.tensor(rows["step"].to_numpy())
    return batch


class ModelBatchCollate(ArrowBatchCollateFn):
    """Builds the model's batch in Ray's prefetch threads, where Ray also pins it when there is a GPU."""

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        if "tokens" not in batch.column_names:
            raise RuntimeError("got plan rows, not token rows: pass dataset_config=data.dataset_config() to the TorchTrainer")
        return model_batch(batch)


# ---------------------------------------------------------------------------------------------
# Driver side: what the TorchTrainer gets


def ray_datasets(
    config: LoaderConfig, seed: int, *, global_batch: int, steps: int, data_ranks: int, stages: int = 1
) -> dict[str, ray.data.Dataset]:
    """The plans for ``TorchTrainer(datasets=...)``: ``train:<source>`` each, and ``val``.

    ``global_batch`` sequences per optimizer step, for ``steps`` steps, split over ``data_ranks``
    data-parallel ranks of ``stages`` pipeline workers each. A training plan lists the epochs of its
    source the run will reach. Pass ``dataset_config()`` beside them: it turns each plan into each
    worker's rows.
    """
    found = {}
    val_rows = []
    weights = [source.weight for source in config.sources]
    drawn = step_counts(weights, global_batch, steps, seed).sum(axis=0)
    for index, ((name, root, manifest), rows) in enumerate(zip(sources(config), drawn)):
        epoch_rows = manifest["splits"]["train"]["sequences"]
        if epoch_rows == 0:
            raise ConfigError(f"data.sources: {name!r} has no train sequences")
        plan_row = {"source": index, "root": root, "seed": seed, "stages": stages}
        train_row = {**plan_row, "split": "train", "weights": weights, "global_batch": global_batch, "steps": steps}
        epochs = max(1, math.ceil(int(rows) / epoch_rows))
        # One block per epoch: each epoch is read by its own task, and only when the stream gets there.
        found[f"train:{name}"] = ray.data.from_items([{**train_row, "epoch": e} for e in range(epochs)], override_num_blocks=epochs)
        if manifest["splits"]["val"]["sequences"]:
            val_rows.append({**plan_row, "split": "val", "limit": config.val_sequences or -1})
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
                # The read runs inside the training worker's CPU budget (num_cpus=0): it is light next
                # to a step, and a task asking for a CPU of its own would wait on a machine whose
                # CPUs the workers hold, and warn that the job may hang.
                rows = plan.map_batches(read_worker_part, fn_kwargs={"rank": rank, "world_size": world_size},
                                        batch_size=1, batch_format="pyarrow", num_cpus=0)
                rows.context.execution_options = self._resolve_execution_options(name)
                rows.context.execution_options.preserve_order = True  # the plan's order is the order
                rows.context.target_max_block_size = self.BLOCK_BYTES
                output[rank][name] = rows.iterator()
        return output


# ---------------------------------------------------------------------------------------------
# Worker side


class _RowStream:
    """One source's rows for this worker, step by step: rows tagged with an earlier step are
    discarded (what a resumed run has already trained on), then a step's rows are taken."""

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]], name: str):
        self.batches, self.name = batches, name
        self.head: dict[str, torch.Tensor] | None = None
        self.offset = 0

    def take(self, step: int, n: int) -> list[dict[str, torch.Tensor]]:
        parts = []
        while n > 0:
            if self.head is None or self.offset == len(self.head["input_ids"]):
                try:
                    self.head, self.offset = next(self.batches), 0
                except StopIteration:
                    raise RuntimeError(f"source {self.name!r}: its plan is used up; it was made for fewer steps") from None
            steps = self.head["step"][self.offset :]
            earlier = int((steps < step).sum())  # rows are in step order
            if earlier:
                self.offset += earlier
                continue
            available = int((steps == step).sum())
            if available == 0:
                raise RuntimeError(f"source {self.name!r}: step {step} is missing rows; the plan does not match the loader")
            taken = min(n, available)
            parts.append({key: value[self.offset : self.offset + taken] for key, value in self.head.items()})
            self.offset, n = self.offset + taken, n - taken
        return parts


class TrainBatches:
    """This worker's endless stream of training micro-batches, and its position (``state_dict``).

    Each step's global batch of ``global_batch`` rows is the same whatever the number of workers;
    data-parallel rank ``rank`` of ``ranks`` takes its equal part, in micro-batches of
    ``micro_batch_size``. The position is global (the optimizer step, and the rows of each source
    drawn by all workers together), so a run resumes on any number of workers with exactly the
    next unseen rows. Each batch holds ``input_ids`` and ``targets`` (micro_batch_size,
    context_length) int64, ``sequence_id``, ``source`` (the source's index) and ``step`` per row, on
    the CPU (pinned with a GPU).
    """

    def __init__(self, config: LoaderConfig, micro_batch_size: int, seed: int, *, global_batch: int, steps: int,
                 rank: int, ranks: int, state: dict[str, Any] | None = None):
        if global_batch % (micro_batch_size * ranks):
            raise ConfigError(f"batch: a global batch of {global_batch} sequences is not a whole number of "
                              f"micro-batches of {micro_batch_size} on each of {ranks} data-parallel workers")
        self.config, self.micro_batch_size, self.seed = config, micro_batch_size, seed
        self.global_batch, self.rank, self.ranks = global_batch, rank, ranks
        self.sources = sources(config)
        self.weights = [source.weight for source in config.sources]
        self.counts = step_counts(self.weights, global_batch, steps, seed)
        self.context_length = self.sources[0][2]["context_length"]
        self.step = 0
        if state is not None:
            self.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        streams = [_RowStream(_torch_batches(f"train:{name}", self.micro_batch_size, self.config), name)
                   for name, _, _ in self.sources]
        intervals = [rank_intervals(self.counts, index, self.rank, self.ranks) for index in range(len(self.sources))]
        while True:
            parts = []
            for stream, (starts, ends, steps) in zip(streams, intervals):
                found = np.searchsorted(steps, self.step)
                if found < len(steps) and steps[found] == self.step:
                    parts += stream.take(self.step, int(ends[found] - starts[found]))
            rows = _concatenate(parts)
            # The position moves before the step's micro-batches are handed out: a checkpoint taken
            # after the step has used them all records the next step.
            self.step += 1
            for start in range(0, len(rows["input_ids"]), self.micro_batch_size):
                yield {key: value[start : start + self.micro_batch_size] for key, value in rows.items()}

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is (optimizer steps taken), and what it must resume with."""
        return {
            "step": self.step,
            "global_batch": self.global_batch,
            "seed": self.seed,
            "sources": [[name, weight] for (name, _, _), weight in zip(self.sources, self.weights)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self.state_dict()
        for key in ("global_batch", "seed", "sources"):
            if state[key] != expected[key]:
                raise ValueError(f"loader state: {key} was {state[key]!r}, is now {expected[key]!r}; exact resume needs the same")
        self.step = state["step"]

    def tokens_per_source(self) -> dict[str, int]:
        """Target positions drawn so far from each source, by all workers together."""
        drawn = self.counts[: self.step].sum(axis=0)
        return {name: int(rows) * self.context_length for (name, _, _), rows in zip(self.sources, drawn)}


def _concatenate(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    # A mixed batch is a fresh copy: pin it again so the copy to the GPU stays asynchronous.
    return {key: value.pin_memory() for key, value in joined.items()} if torch.cuda.is_available() else joined


def train_batches(config: LoaderConfig, micro_batch_size: int, state: dict[str, Any] | None, seed: int, *,
                  global_batch: int, steps: int, rank: int, ranks: int) -> TrainBatches:
    """In a Ray Train worker: the training micro-batches, from ``state`` (a ``state_dict()``) if given."""
    return TrainBatches(config, micro_batch_size, seed, global_batch=global_batch, steps=steps, rank=rank,
                        ranks=ranks, state=state)


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
    """The dataset's batches. The shard is asked for now, not at the first batch: every worker must
    ask Ray Train for every dataset together, including one it takes no rows from for a while."""
    shard = ray.train.get_dataset_shard(name)
    if shard is None:
        raise RuntimeError(f"no dataset {name!r}: pass datasets=data.ray_datasets(...) to the TorchTrainer")
    return iter(shard.iter_torch_batches(
        batch_size=batch_size,
        prefetch_batches=config.prefetch_batches,
        collate_fn=ModelBatchCollate(),
        device="cpu",  # the training loop moves batches to its device, counting targets on the CPU first
        pin_memory=torch.cuda.is_available(),
    ))
