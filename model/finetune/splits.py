"""Deterministic train / validation / test splits of fine-tuning examples, as the book makes them.

- Classification (chapter 6): optionally balance the classes by downsampling each to the smallest
  one's size, shuffle with a seed, then cut by fractions (70/10/20 for the SMS spam set).
- Instruction data (chapter 7): cut the file in its own order by fractions (85/5/10), no shuffle.

The same examples, seed and fractions always give the same splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Splits(Generic[T]):
    train: list[T]
    val: list[T]
    test: list[T]

    def named(self) -> dict[str, list[T]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"split fractions {list(fractions)}: need three non-negative numbers (train, val, test) "
                         "summing to at most 1")


def cut(examples: Sequence[T], fractions: Sequence[float]) -> Splits[T]:
    """The first ``int(n * train)`` examples train, the next ``int(n * val)`` validate, and the test
    split takes the next ``int(n * test)`` (or the rest, when the fractions sum to 1)."""
    check_fractions(fractions)
    return Splits(*_consecutive_runs(examples, fractions))


def instruction_splits(examples: Sequence[T], fractions: Sequence[float] = (0.85, 0.05, 0.10)) -> Splits[T]:
    """The book's split of instruction data: train first, then test, then validation (the rest),
    in file order: 1,100 examples give 935 / 55 / 110 (train / val / test)."""
    check_fractions(fractions)
    train, test, val = _consecutive_runs(examples, (fractions[0], fractions[2], fractions[1]))
    return Splits(train, val, test)


def _consecutive_runs(examples: Sequence[T], fractions: Sequence[float]) -> tuple[list[T], list[T], list[T]]:
    """Three runs of examples in order, ``int(n * fraction)`` each; the last takes the rest when the
    fractions sum to 1."""
    n = len(examples)
    first_end = int(n * fractions[0])
    second_end = first_end + int(n * fractions[1])
    third_end = n if abs(sum(fractions) - 1) < 1e-9 else second_end + int(n * fractions[2])
    return list(examples[:first_end]), list(examples[first_end:second_end]), list(examples[second_end:third_end])


def classification_splits(
    examples: Sequence[T], labels: Sequence[int], fractions: Sequence[float], seed: int, balance: bool
) -> Splits[T]:
    """Balance by downsampling (if asked), shuffle with ``seed``, cut by ``fractions``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = np.arange(len(labels))
    if balance:
        smallest = min(np.bincount(labels)[np.unique(labels)])
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == label), smallest, replace=False)
                                       for label in np.unique(labels)]))
    order = keep[rng.permutation(len(keep))]
    return cut([examples[i] for i in order], fractions)
