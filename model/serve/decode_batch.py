"""The running sequences of the engine, and their keys and values in one shared cache.

Every row's newest token sits in the same column: each decode step appends one column for all rows,
exactly as ``model/generate.py`` does for a left-padded batch. A row that joins is placed so that
its prompt ends at the current column; the columns before its first token are masked out of its
attention, and its positions count from its own first token. So ``GPT.hidden_states`` runs the
whole batch with its ordinary (KV cache, attention mask, position ids) interface.

Rows leave by swapping the last row into their place (one row's cache is copied, not the batch's).
Columns no row uses any more are dropped from the left when the cache runs out of width; a row
never spans more than ``context_length`` columns, so a cache that wide always has room.
"""

from __future__ import annotations

from typing import Any

import torch

from model.config import GPTConfig
from model.gpt import KVCache


class DecodeBatch:
    """Rows (whatever the engine tracks per sequence) with their first column; the cache protocol
    of ``model.gpt.KVCache`` (``length``, ``append``, ``advance``) over the rows in use."""

    def __init__(self, config: GPTConfig, max_rows: int, device: torch.device, dtype: torch.dtype,
                 initial_width: int = 64):
        self.config = config
        self.max_rows = max_rows
        self.device, self.dtype = device, dtype
        self._initial_width = min(initial_width, config.context_length)
        self.keys: torch.Tensor | None = None  # (n_layers, row capacity, kv_heads, width, head_dim)
        self.values: torch.Tensor | None = None
        self.length = 0  # columns in use; the next token of every row goes to column ``length``
        self.rows: list[Any] = []
        self.starts: list[int] = []  # each row's first real column

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return 0 if self.keys is None else self.keys.shape[3]

    # -- joining and leaving -----------------------------------------------------------------------

    def add(self, rows: list[Any], prompt_lengths: list[int], prefill: KVCache) -> None:
        """Take ``rows`` whose prompts were prefilled together, left-padded, into ``prefill``."""
        if self.size + len(rows) > self.max_rows:
            raise ValueError(f"{self.size} + {len(rows)} rows exceed max_rows={self.max_rows}")
        span = prefill.length  # the group's longest prompt; every prompt ends at its last column
        if self.length < span:  # not enough columns before the current one: move everyone right
            self._reserve(self.size + len(rows), span)
            self._shift(span - self.length)
        self._reserve(self.size + len(rows), self.length)
        first, last = self.size, self.size + len(rows)
        self.keys[:, first:last, :, self.length - span : self.length] = prefill.keys[:, :, :, :span]
        self.values[:, first:last, :, self.length - span : self.length] = prefill.values[:, :, :, :span]
        self.rows.extend(rows)
        self.starts.extend(self.length - length for length in prompt_lengths)

    def remove(self, index: int) -> None:
        """Drop row ``index``: the last row takes its place."""
        last = self.size - 1
        if index != last:
            self.keys[:, index] = self.keys[:, last]
            self.values[:, index] = self.values[:, last]
            self.rows[index], self.starts[index] = self.rows[last], self.starts[last]
        self.rows.pop()
        self.starts.pop()
        if not self.rows:
            self.length = 0

    def clear(self) -> None:
        self.rows, self.starts, self.length = [], [], 0

    def make_room(self) -> None:
        """Before a decode step: make sure column ``length`` exists."""
        if self.length < self.width:
            return
        unused = min(self.starts)
        if unused > 0:
            self._shift(-unused)
        if self.length >= self.width:
            self._reserve(self.size, self.length + 1)

    def attention_mask(self) -> torch.Tensor:
        """(rows, length + 1): which columns each row's next token may see (its own, from its start)."""
        columns = torch.arange(self.length + 1, device=self.device)
        return (columns[None, :] >= torch.tensor(self.starts, device=self.device)[:, None]).long()

    # -- the KV cache protocol GPT.hidden_states uses ------------------------------------------------

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, end = self.size, self.length + k.shape[2]
        self.keys[layer, :rows, :, self.length : end] = k
        self.values[layer, :rows, :, self.length : end] = v
        return self.keys[layer, :rows, :, :end], self.values[layer, :rows, :, :end]

    def advance(self, n_positions: int) -> None:
        self.length += n_positions

    # -- storage -----------------------------------------------------------------------------------

    def _shift(self, columns: int) -> None:
        """Move every row's columns right (positive) or left (negative) by ``columns``."""
        rows, length = self.size, self.length
        if columns > 0:
            self.keys[:, :rows, :, columns : columns + length] = self.keys[:, :rows, :, :length].clone()
            self.values[:, :rows, :, columns : columns + length] = self.values[:, :rows, :, :length].clone()
        elif columns < 0:
            self.keys[:, :rows, :, : length + columns] = self.keys[:, :rows, :, -columns:length].clone()
            self.values[:, :rows, :, : length + columns] = self.values[:, :rows, :, -columns:length].clone()
        self.length += columns
        self.starts = [start + columns for start in self.starts]

    def _reserve(self, rows: int, width: int) -> None:
        """Grow the storage (doubling, up to max_rows and context_length) to hold ``rows`` x ``width``."""
        if width > self.config.context_length:
            raise ValueError(f"{width} columns exceed context_length={self.config.context_length}")
        have_rows, have_width = (0, 0) if self.keys is None else (self.keys.shape[1], self.keys.shape[3])
        if rows <= have_rows and width <= have_width:
            return
        new_rows = min(self.max_rows, max(rows, 2 * have_rows, 1))
        new_width = min(self.config.context_length, max(width, 2 * have_width, self._initial_width))
        config = self.config
        shape = (config.n_layers, new_rows, config.kv_heads, new_width, config.head_dim)
        keys = torch.zeros(shape, device=self.device, dtype=self.dtype)
        values = torch.zeros(shape, device=self.device, dtype=self.dtype)
        if self.keys is not None:
            keys[:, :have_rows, :, :have_width] = self.keys
            values[:, :have_rows, :, :have_width] = self.values
        self.keys, self.values = keys, values
