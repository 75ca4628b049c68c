"""The training loop that runs on every Ray Train worker, for pretraining and fine-tuning alike.

What is trained comes from a ``TrainingTask``: the model, its batches, its loss and its evaluations.
The loop does the rest, the same way for every task:

    build the model (DDP, FSDP on the meta device, or pipeline stages: model/parallel.py)
    resume (Ray Train's latest checkpoint, or a configured one, written by any number of workers)
    or start from the seed
    each step:  fetch the micro-batches -> forward/backward each, syncing gradients on the last only
                (under a pipeline, the schedule runs them all) -> clip -> set the scheduled learning
                rate -> the optimizers' step (model/optim.py), skipped if the loss or the gradient
                norm is not finite
    every N steps: log (rank 0 to MLflow, a progress line), evaluate, checkpoint through Ray Train
                (sharded, written in the background and reported a step later)

Ray Train appears only at the edges: the worker's rank and device, ``report`` (metrics and
checkpoints) and ``get_checkpoint``; the task reads its dataset shard with ``get_dataset_shard``.

Gradient accumulation is exact: each micro-batch's summed loss is divided by the number of
predictions in the whole global batch (counted over all workers before the first backward), so any
split of the same global batch over workers and micro-steps gives the same gradient, up to float
rounding (tests/integration/test_train_loop.py).
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray.train
import ray.train.torch
import torch
from torch import nn

from model import parallel, sharded_state, train_state
from model.optim import build_optimizers, learning_rate_schedule, set_learning_rate
from model.throughput import Throughput, assumed_peak_flops, progress_line
from model.train_config import TrainConfig, accumulation_steps
from pipeline.tracking import RunLogger

Batch = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Where this copy of the loop runs, for tasks that evaluate in a distributed way."""

    rank: int
    world_size: int
    device: torch.device
    autocast: Any  # a factory of the precision context for forward passes
    # Which part of each global batch this worker trains on: the workers of one pipeline share one.
    data_rank: int
    data_ranks: int

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return parallel.all_reduce_sum(values, self.device)

    def all_reduce_max(self, value: int) -> int:
        return parallel.all_reduce_max(value, self.device)


@dataclass
class Evaluation:
    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # artifact file -> text, e.g. sample generations


class ResumableBatches(Protocol):
    """An endless iterator of training micro-batches whose position can be saved and restored."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...


class TrainingTask(Protocol):
    """What a job trains. Built on the driver and shipped to every worker, so it holds only settings;
    it loads what it needs (tokenizer, data) on the worker."""

    sequence_length: int  # tokens per sequence the model reads

    def datasets(self) -> dict[str, Any]:
        """Driver side: the Ray Datasets for ``TorchTrainer(datasets=...)``."""

    def dataset_config(self) -> ray.train.DataConfig | None:
        """Driver side: how Ray Train hands those datasets to the workers (None: Ray's default split)."""

    def build_model(self, load_weights: bool = True) -> nn.Module:
        """The bare model on the CPU (random init, or the weights it starts from if ``load_weights``);
        the loop wraps and moves it. Under FSDP it is built on the ``meta`` device without weights."""

    def loads_weights(self) -> bool:
        """Whether the model starts from saved weights rather than a random init."""

    def train_batches(self, worker: Worker, micro_batch_size: int, state: dict[str, Any] | None) -> ResumableBatches:
        """This worker's micro-batches, from the saved position ``state`` if there is one."""

    def prediction_count(self, batch: Batch) -> torch.Tensor:
        """How many predictions (targets) the batch's loss sums over."""

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's predictions."""

    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The same from the model's logits: what a pipeline's last stage computes (only tasks that
        allow ``parallel.strategy: pipeline`` need it)."""

    def stream_metrics(self, batches: ResumableBatches) -> dict[str, float]:
        """Figures about the data drawn so far (e.g. tokens per source of a mixture), logged with the loss."""

    def flops_per_token(self, model: nn.Module) -> int | None:
        """Training FLOPs per token, for MFU; None if not known."""

    def evaluate(self, model: nn.Module, worker: Worker, step: int, final: bool) -> Evaluation:
        """Called on every worker at evaluation steps (it may run collectives); rank 0's result is logged."""

    def save_model(self, state: dict[str, torch.Tensor], directory: Path) -> None:
        """Write full (unsharded) weights as the task's model format."""

    def exports(self, model_dir: Path, scratch: Path) -> dict[str, Path]:
        """Driver side, at the end: other formats of the final model to keep, as artifact path -> folder."""


@dataclass
class Job:
    """Everything the driver hands each worker."""

    config: TrainConfig
    task: TrainingTask
    tracking_uri: str | None = None
    run_id: str | None = None  # the MLflow run, created by the driver before fit()


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of the TorchTrainer. Rank 0 returns the step it started from (0, or
    the checkpoint's) and, for each step it ran, the loss, learning rate, and seconds (in all and
    waiting for data)."""
    job: Job = loop_config["job"]
    config, task = job.config, job.task
    worker, model = _set_up(config, task)
    rank, world_size, device = worker.rank, worker.world_size, worker.device
    optimizers = build_optimizers(model, config.optim)
    schedule = learning_rate_schedule(config.optim, config.run.max_steps)
    accumulation = accumulation_steps(config.batch, task.sequence_length, worker.data_ranks)

    step, tokens_seen, loader_state = 0, 0, None
    checkpoint = ray.train.get_checkpoint()  # set when Ray Train restarts or a rerun continues this run
    restarted = checkpoint is not None
    if checkpoint is None and config.checkpoint.resume_from:
        checkpoint = ray.train.Checkpoint(config.checkpoint.resume_from)
    if checkpoint is not None:
        step, tokens_seen, loader_state = _restore(checkpoint, model, optimizers, worker, config.run.seed)
    else:
        train_state.seed_everything(config.run.seed + rank)  # each worker its own dropout masks
    start_step = step
    writer = sharded_state.ShardedWriter(asynchronous=config.parallel.async_checkpoint)

    batches = task.train_batches(worker, config.batch.micro_batch_size, loader_state)
    batch_iterator = iter(batches)
    logger = RunLogger(job.tracking_uri, job.run_id) if rank == 0 and job.run_id else None
    flops_per_token = task.flops_per_token(parallel.inner_module(model))
    peak_flops = config.tracking.peak_flops_per_worker or assumed_peak_flops(
        device, parallel.compute_dtype(config.parallel, device), config.parallel.allow_tf32)
    meter = Throughput(config.run.max_steps)
    if logger and not restarted:  # a restart logs into the same run, whose params are set already
        logger.log_params({"device": _device_name(device), "world_size": world_size,
                           "accumulation_steps": accumulation, "mfu.assumed_peak_flops_per_worker": peak_flops})
    history: list[dict[str, float]] = []
    nonfinite = NonFiniteSteps(config.optim.max_nonfinite_steps)
    watch = EarlyStopping(config)
    log.info(f"training steps {step}..{config.run.max_steps} on {world_size} worker(s), {accumulation} "
             f"micro-batch(es) of {config.batch.micro_batch_size} per worker per step"
             + (f", resumed from step {step}" if step else ""))

    pending: PendingCheckpoint | None = None
    model.train()
    while step < config.run.max_steps:
        started = time.perf_counter()
        micro_batches, predictions, data_wait = [], 0.0, 0.0
        for _ in range(accumulation):
            waiting = time.perf_counter()
            batch = next(batch_iterator)
            data_wait += time.perf_counter() - waiting
            predictions += float(task.prediction_count(batch))  # counted on the CPU: no device sync
            micro_batches.append({name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()})
        multiplier = schedule(step)
        learning_rate = config.optim.learning_rate * multiplier  # AdamW's; Muon's scales alike
        loss, grad_norm, applied = _train_step(
            model, optimizers, task, micro_batches, predictions, worker, multiplier, config.optim.grad_clip
        )
        if applied:
            nonfinite.applied()
        else:
            nonfinite.skipped(step + 1, loss, grad_norm)
        step += 1
        step_tokens = sum(batch["input_ids"].numel() for batch in micro_batches) * world_size
        tokens_seen += step_tokens
        seconds = time.perf_counter() - started
        meter.add_step(step_tokens, seconds, data_wait)
        history.append({"step": step, "loss": loss, "lr": learning_rate, "seconds": seconds, "data_wait": data_wait})

        final = step == config.run.max_steps
        metrics: dict[str, float] = {}
        if step % config.run.log_every_steps == 0 or final:
            figures = meter.take(step)
            metrics = {"loss": loss, "lr": learning_rate, "grad_norm": grad_norm, "tokens_seen": tokens_seen,
                       "tokens_per_s": figures["tokens_per_s"], "data_wait_fraction": figures["data_wait_fraction"],
                       "skipped_steps": nonfinite.total}
            metrics.update(task.stream_metrics(batches))
            if flops_per_token and peak_flops:
                per_worker = figures["tokens_per_s"] / world_size
                metrics["mfu"] = flops_per_token * per_worker / peak_flops
            log.info(progress_line(step, config.run.max_steps, loss, learning_rate, figures, metrics.get("mfu")))
        if step % config.run.eval_every_steps == 0 or final:
            evaluation = task.evaluate(model, worker, step, final)
            model.train()
            metrics.update(evaluation.metrics)
            if watch.evaluated(step, evaluation.metrics):  # every worker sees the same, all-reduced figures
                final = True
            if logger:
                for artifact_file, text in evaluation.texts.items():
                    logger.log_text(text, artifact_file)
            if evaluation.metrics:
                log.info(f"step {step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items()))
        if logger and metrics:
            logger.log_metrics(metrics, step)
        if pending is not None:  # the previous step's checkpoint has been written meanwhile
            pending.report(writer)
            pending = None
        if step % config.checkpoint.every_steps == 0 or final:
            pending = PendingCheckpoint.start(model, optimizers, batches, worker, writer, step, tokens_seen, metrics)
            if final or watch.stopped or not writer.asynchronous:
                pending.report(writer)
                pending = None
        elif metrics:
            ray.train.report({**metrics, "step": step})
        if watch.stopped:
            break
    return {"start_step": start_step, "history": history}


class EarlyStopping:
    """Watches ``checkpoint.keep_best``'s metric at each evaluation; with ``run.early_stopping_evals``
    set, stops the run when it has not improved for that many evaluations in a row. (A worker group
    restarted after a failure starts counting afresh from its checkpoint.)"""

    def __init__(self, config: TrainConfig):
        self.checkpoint, self.patience = config.checkpoint, config.run.early_stopping_evals
        self.best: float | None = None
        self.stale = 0
        self.stopped = False

    def evaluated(self, step: int, metrics: dict[str, float]) -> bool:
        """Record an evaluation; True when the run should stop after this step."""
        value = metrics.get(self.checkpoint.keep_best) if self.checkpoint.keep_best else None
        if value is None or self.patience is None:
            return False
        if self.checkpoint.improves(value, self.best):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.stale >= self.patience:
            self.stopped = True
            log.info(f"step {step}: {self.checkpoint.keep_best} has not improved on {self.best:.4f} for "
                     f"{self.stale} evaluations: stopping early")
        return self.stopped


class NonFiniteSteps:
    """Steps skipped for a non-finite loss or gradient norm: counted, logged, and fatal after
    ``limit`` in a row (a diverged run does not come back by itself; a lone bad batch does)."""

    def __init__(self, limit: int):
        self.limit, self.total, self.in_a_row = limit, 0, 0

    def skipped(self, step: int, loss: float, grad_norm: float) -> None:
        self.total += 1
        self.in_a_row += 1
        log.warning(f"step {step}: loss {loss}, gradient norm {grad_norm}: not finite, the update is skipped "
                    f"({self.in_a_row} in a row)")
        if self.in_a_row >= self.limit:
            raise RuntimeError(f"{self.in_a_row} steps in a row had a non-finite loss or gradient norm (the last: "
                               f"step {step}, loss {loss}, gradient norm {grad_norm}); the run has diverged: lower "
                               "optim.learning_rate, or look for bad data near this step")

    def applied(self) -> None:
        self.in_a_row = 0


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _quiet_console(rank: int) -> None:
    """One voice on the console: rank 0's progress lines. Everything else below WARNING, from any
    library and any rank, stays in the worker's log files."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # it has its own handlers
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def evaluate_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` that only evaluates the task's model (``jobs/evaluate.py``);
    rank 0 returns the metrics and texts."""
    job: Job = loop_config["job"]
    worker, model = _set_up(job.config, job.task)
    evaluation = job.task.evaluate(model, worker, step=0, final=True)
    return {"metrics": evaluation.metrics, "texts": evaluation.texts}


def _set_up(config: TrainConfig, task: TrainingTask) -> tuple[Worker, nn.Module]:
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    _quiet_console(rank)
    device = ray.train.torch.get_device()
    stages = config.parallel.stages()
    worker = Worker(rank, world_size, device, lambda: parallel.autocast(config.parallel, device),
                    data_rank=rank // stages, data_ranks=world_size // stages)
    train_state.seed_everything(config.run.seed)  # the same initial weights on every worker
    if config.parallel.strategy == "pipeline":
        accumulation = accumulation_steps(config.batch, task.sequence_length, worker.data_ranks)
        return worker, parallel.PipelineParallel(task.build_model(), config.parallel, device, rank, world_size,
                                                 accumulation, task.loss_from_logits)
    if config.parallel.strategy != "fsdp":
        return worker, parallel.parallelize(task.build_model(), config.parallel, device, world_size)
    saved_weights = (lambda: task.build_model().state_dict()) if task.loads_weights() else None
    return worker, parallel.sharded_on_meta(lambda: task.build_model(load_weights=False), config.parallel, device,
                                            world_size, saved_weights)


def _train_step(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    task: TrainingTask,
    micro_batches: list[Batch],
    predictions: float,
    worker: Worker,
    lr_multiplier: float,
    grad_clip: float,
) -> tuple[float, float, bool]:
    """One optimizer step over this worker's micro-batches, which hold ``predictions`` targets;
    returns the global batch's mean loss, the gradient norm before clipping, and whether the update
    was applied (not when either is not finite: every worker sees the same global figures, so all
    skip together)."""
    if isinstance(model, parallel.PipelineParallel):
        loss, grad_norm = _pipeline_backward(model, task, micro_batches, predictions, worker, grad_clip)
        return loss, grad_norm, _apply(optimizers, loss, grad_norm, lr_multiplier)
    (global_count,) = worker.all_reduce_sum([predictions])
    # DDP and FSDP average gradients over workers; the loss is pre-multiplied by their number so the
    # result is the gradient of (sum over the global batch) / global_count.
    scale = worker.world_size / global_count
    loss_sum = torch.zeros((), device=worker.device)
    for index, batch in enumerate(micro_batches):
        with parallel.gradient_sync(model, enabled=index == len(micro_batches) - 1):
            with worker.autocast():
                batch_loss = task.loss_sum(model, batch)
            (batch_loss * scale).backward()
        loss_sum += batch_loss.detach().float()
    grad_norm = parallel.clip_gradients(model, grad_clip)
    (global_loss,) = worker.all_reduce_sum([float(loss_sum)])
    loss = global_loss / global_count
    return loss, grad_norm, _apply(optimizers, loss, grad_norm, lr_multiplier)


def _pipeline_backward(
    model: parallel.PipelineParallel,
    task: TrainingTask,
    micro_batches: list[Batch],
    predictions: float,
    worker: Worker,
    grad_clip: float,
) -> tuple[float, float]:
    """Forward and backward of this replica's micro-batches through the pipeline's schedule, then
    the gradients averaged over replicas, the tied embedding/head's synced, and clipped over all
    stages. -> (the global batch's mean loss, the gradient norm before clipping)."""
    stages = worker.world_size // worker.data_ranks
    # Every stage of a replica counted the same batch: the global count is the sum over stages' ranks / stages.
    (counted,) = worker.all_reduce_sum([predictions])
    global_count = counted / stages
    model.loss_scale = worker.data_ranks / global_count  # as under DDP: replicas' gradients are averaged
    batch = {name: torch.cat([micro[name] for micro in micro_batches]) for name in ("input_ids", "targets")}
    pipe = model.pipe
    with worker.autocast():
        scaled = pipe.step(batch["input_ids"] if pipe.holds_first else None, batch["targets"] if pipe.holds_last else None)
    model.average_gradients()
    pipe.sync_tied_gradients()
    grad_norm = pipe.clip_gradients(grad_clip)
    # Only the last stage has a loss; the others add nothing to the sum.
    local = float(scaled) / model.loss_scale if scaled is not None else 0.0
    (global_loss,) = worker.all_reduce_sum([local])
    return global_loss / global_count, grad_norm


def _apply(optimizers: list[torch.optim.Optimizer], loss: float, grad_norm: float, lr_multiplier: float) -> bool:
    """The optimizers' step at the scheduled rate unless the loss or the gradient norm is not
    finite; the gradients cleared either way. -> whether the update was applied."""
    applied = math.isfinite(loss) and math.isfinite(grad_norm)
    if applied:
        set_learning_rate(optimizers, lr_multiplier)
        for optimizer in optimizers:
            optimizer.step()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    return applied


@dataclass
class PendingCheckpoint:
    """A checkpoint being written: reported to Ray Train once the write is complete, so a step
    waits only for the state's copy into memory (with ``parallel.async_checkpoint``)."""

    folder: tempfile.TemporaryDirectory
    step: int
    metrics: dict[str, float]

    @classmethod
    def start(
        cls,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        batches: ResumableBatches,
        worker: Worker,
        writer: sharded_state.ShardedWriter,
        step: int,
        tokens_seen: int,
        metrics: dict[str, float],
    ) -> PendingCheckpoint:
        """Every worker writes its part into a folder of its own; Ray Train merges them."""
        folder = tempfile.TemporaryDirectory(prefix="webllm-checkpoint-")
        directory = Path(folder.name)
        if worker.rank == 0:
            train_state.save_train_state(directory, step=step, tokens_seen=tokens_seen, world_size=worker.world_size)
        train_state.save_worker_state(directory, worker.rank, loader=batches.state_dict())
        writer.save(model, optimizers, directory / train_state.STATE_DIR)
        return cls(folder, step, metrics)

    def report(self, writer: sharded_state.ShardedWriter) -> None:
        writer.wait()
        with self.folder:
            ray.train.report(
                {**self.metrics, "step": self.step},
                checkpoint=ray.train.Checkpoint.from_directory(self.folder.name),
                checkpoint_dir_name=train_state.checkpoint_name(self.step),
            )
        log.info(f"step {self.step}: checkpoint saved")


def _restore(
    checkpoint: ray.train.Checkpoint,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    worker: Worker,
    seed: int,
) -> tuple[int, int, dict[str, Any]]:
    """Load a training checkpoint, written by any number of workers; returns (step, tokens seen,
    the loader state to continue from).

    Model and optimizer come back resharded for this run's workers. On as many workers as wrote
    it, each worker also gets back its own generators and loader position: the run continues
    bit for bit. On another number, the loader continues from the global position that rank 0
    recorded (a token stream's position is global: see model/data.py), and each worker's
    generators (dropout) are seeded afresh from the seed, its rank and the step.
    """
    with checkpoint.as_directory() as folder:
        directory = Path(folder)
        state = train_state.load_train_state(directory)
        sharded_state.load_sharded(model, optimizers, directory / train_state.STATE_DIR)
        same_workers = state["world_size"] == worker.world_size
        worker_state = train_state.load_worker_state(directory, worker.rank if same_workers else 0)
    if same_workers:
        train_state.restore_rng_state(worker_state["rng"])
    else:
        log.info(f"resuming on {worker.world_size} workers a checkpoint written by {state['world_size']}")
        train_state.seed_everything(seed + worker.rank + 1_000_003 * state["step"])
    return state["step"], state["tokens_seen"], worker_state["loader"]
