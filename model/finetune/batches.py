"""Fine-tuning examples -> training micro-batches on each worker, resumable to the exact batch.

Fine-tuning sets are small (thousands of examples), so every worker reads the whole file and takes
its own part; no Ray Dataset is needed. The order is a pure function of the seed: epoch ``e`` visits
the examples in a permutation seeded by ``(seed, e)``, worker ``r`` of ``W`` takes every W-th of them
from ``r`` (all workers as many), and cuts them into micro-batches (a last short one is left out of
that epoch). The state is (epoch, micro-batches taken in it): a resumed run continues with the very
next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch

T = TypeVar("T")
Collate = Callable[[list[T]], dict[str, torch.Tensor]]


class ExampleBatches(Generic[T]):
    def __init__(
        self,
        examples: Sequence[T],
        collate: Collate,
        micro_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        state: dict[str, Any] | None = None,
    ):
        self.per_worker = len(examples) // world_size
        self.batches_per_epoch = self.per_worker // micro_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{len(examples)} training examples are fewer than one micro-batch of "
                             f"{micro_batch_size} on each of {world_size} workers")
        self.examples, self.collate, self.micro_batch_size = examples, collate, micro_batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        if state and state["world_size"] != world_size:
            # A worker's position is its place in its own part of each epoch, which the number of
            # workers decides: a position on another number means nothing here.
            raise ValueError(f"this fine-tuning checkpoint was written by {state['world_size']} workers: resume it on "
                             f"as many (scaling.num_workers), not {world_size}")
        self.epoch = int(state["epoch"]) if state else 0
        self.taken = int(state["taken"]) if state else 0  # micro-batches of this epoch already handed out

    def _epoch_part(self) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))
        return order[: self.per_worker * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            part = self._epoch_part()
            while self.taken < self.batches_per_epoch:
                start = self.taken * self.micro_batch_size
                indices = part[start : start + self.micro_batch_size]
                self.taken += 1
                yield self.collate([self.examples[i] for i in indices])
            self.epoch, self.taken = self.epoch + 1, 0

    def epochs_done(self) -> float:
        return self.epoch + self.taken / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "taken": self.taken, "world_size": self.world_size}
