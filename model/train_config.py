"""The training loop's settings, shared by every training job (pretraining and the fine-tunes).

A job's YAML holds these sections beside its own (which model, which data, which evaluations):

    run:         name, output folder, seed, steps, how often to log and evaluate
    batch:       the global batch (in tokens or sequences) and the micro-batch one worker runs at once
    optim:       AdamW and the learning-rate schedule (model/optim.py)
    parallel:    DDP or FSDP, precision, compile (model/parallel.py)
    checkpoint:  how often, how many to keep, where to resume from
    scaling:     workers, GPUs, CPUs per worker, failures to survive
    tracking:    the MLflow experiment and the registered model name
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field

from model.optim import OptimConfig
from model.parallel import ParallelConfig
from pipeline.config import ConfigError, config_dataclass

Positive = Annotated[int, Field(ge=1)]


@config_dataclass
class RunConfig:
    name: str = "pretrain"
    # Where Ray Train keeps checkpoints: a local folder, or s3:// / gs:// shared by every node.
    output: str = "data/runs"
    seed: int = 1337
    max_steps: Positive = 1000
    log_every_steps: Positive = 10
    eval_every_steps: Positive = 100  # and at the last step
    # Stop early when checkpoint.keep_best's metric has not improved for this many evaluations in a
    # row (None: run all max_steps). The best checkpoint is still the one exported.
    early_stopping_evals: Positive | None = None


@config_dataclass
class BatchConfig:
    # The global batch of one optimizer step, all workers together: in tokens (pretraining) or in
    # sequences; give exactly one. It must be a whole number of micro-batches on every worker.
    global_batch_tokens: Annotated[int, Field(ge=1)] | None = None
    global_batch_size: Annotated[int, Field(ge=1)] | None = None
    micro_batch_size: Positive = 8  # sequences per forward pass on one worker

    def __post_init__(self) -> None:
        if (self.global_batch_tokens is None) == (self.global_batch_size is None):
            raise ValueError("give exactly one of global_batch_tokens and global_batch_size")


@config_dataclass
class CheckpointConfig:
    every_steps: Positive = 100  # and at the last step
    keep_last: Positive = 3  # checkpoints kept: the latest ones, or with keep_best the best ones
    # Keep the best checkpoints by this evaluation metric (Ray Train's checkpoint_score_attribute),
    # e.g. val_loss or val_accuracy, and export the best as the run's model, not the last. Ray Train
    # also keeps the latest, to resume from. None: the latest ones.
    keep_best: str | None = None
    # Whether lower or higher is better; None: lower for losses and bits per byte, else higher.
    keep_best_mode: Literal["min", "max"] | None = None
    # A checkpoint folder to start from when Ray Train has none of its own (a restarted run always
    # resumes from its latest checkpoint, whatever this says).
    resume_from: str | None = None

    def best_mode(self) -> Literal["min", "max"]:
        if self.keep_best_mode is not None:
            return self.keep_best_mode
        return "min" if self.keep_best and ("loss" in self.keep_best or "bpb" in self.keep_best) else "max"

    def improves(self, value: float, best: float | None) -> bool:
        return best is None or (value < best if self.best_mode() == "min" else value > best)


@config_dataclass
class ScalingConfig:
    num_workers: Positive = 1
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    # How many worker failures the run survives: each restarts every worker from the latest checkpoint.
    max_failures: Annotated[int, Field(ge=-1)] = 0


@config_dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "pretraining"
    # Register the final model under this name in the MLflow model registry (None: do not register).
    registered_model: str | None = None
    # The peak FLOP/s of one worker's device that MFU is measured against. None: a known GPU's dense
    # peak at the run's precision (model/throughput.py), or for CPU workers 100 GFLOP/s per thread
    # (a nominal AVX-512 FMA core).
    peak_flops_per_worker: Annotated[float, Field(gt=0)] | None = None


@config_dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    batch: BatchConfig = field(default_factory=lambda: BatchConfig(global_batch_size=32))
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.scaling.num_workers % self.parallel.stages():
            raise ValueError(f"scaling.num_workers: {self.scaling.num_workers} is not a whole number of pipelines of "
                             f"parallel.pipeline_stages={self.parallel.pipeline_stages} workers")
        if self.checkpoint.keep_best and self.checkpoint.every_steps % self.run.eval_every_steps:
            # Every checkpoint must carry the metric it is ranked by: a fresh evaluation.
            raise ValueError(f"checkpoint.every_steps: with keep_best it must be a multiple of run.eval_every_steps "
                             f"({self.run.eval_every_steps}), got {self.checkpoint.every_steps}")
        if self.run.early_stopping_evals and not self.checkpoint.keep_best:
            raise ValueError("run.early_stopping_evals: needs checkpoint.keep_best, the metric to watch")


def global_batch_sequences(batch: BatchConfig, sequence_length: int) -> int:
    """Sequences per optimizer step, all workers together."""
    if batch.global_batch_tokens is None:
        return batch.global_batch_size
    if batch.global_batch_tokens % sequence_length:
        raise ConfigError(
            f"batch.global_batch_tokens: {batch.global_batch_tokens} is not a multiple of the "
            f"sequence length {sequence_length}"
        )
    return batch.global_batch_tokens // sequence_length


def accumulation_steps(batch: BatchConfig, sequence_length: int, data_ranks: int) -> int:
    """Micro-steps per optimizer step on each data-parallel rank, so that all of them together
    process exactly the global batch: global = micro_batch_size x data_ranks x accumulation."""
    sequences = global_batch_sequences(batch, sequence_length)
    per_micro_step = batch.micro_batch_size * data_ranks
    if sequences % per_micro_step:
        raise ConfigError(
            f"batch: a global batch of {sequences} sequences is not a whole number of micro-batches of "
            f"{batch.micro_batch_size} on each of {data_ranks} data-parallel workers"
        )
    return sequences // per_micro_step
