"""The small interface every pipeline stage shares.

A stage is a callable ``pa.Table -> pa.Table`` over document batches (see ``documents.py``). It acts
on alive rows only and passes dropped rows through untouched, so stages can be chained in any order
and unit-tested with no Ray. ``build.py`` runs them with Ray Data's ``map_batches``; stages that load
a model do it in ``__init__`` so Ray loads it once per actor.

Counters that are not drops (lines removed, emails masked, ...) go into ``self.stats``; the build
collects and resets them after every batch. Drops are counted from the data itself at the end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from pipeline.documents import alive_rows, replace_column, with_drops


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a document was removed, and the value the rule measured."""

    reason: str
    value: float | None = None


class Stage:
    name: str = "stage"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def take_stats(self) -> Counter[str]:
        stats, self.stats = self.stats, Counter()
        return stats


class DocumentFilter(Stage):
    """Keeps or drops each alive document by looking at its text.

    Subclasses implement ``check(text) -> Drop | None``. ``columns`` names extra columns the filter
    writes for every alive row (for example ``lang``); ``annotate`` fills them.
    """

    def check(self, text: str) -> Drop | None:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        reasons: list[str | None] = [None] * len(batch)
        values: list[float | None] = [None] * len(batch)
        for i, text in alive_rows(batch):
            drop = self.check(text or "")
            if drop is not None:
                reasons[i] = f"{self.name}:{drop.reason}"
                values[i] = drop.value
        return with_drops(batch, reasons, values)


class TextTransform(Stage):
    """Rewrites the text of each alive document (line removal, PII masking, ...).

    ``transform`` returns the new text, or a ``Drop`` when nothing worth keeping remains.
    """

    def transform(self, text: str) -> str | Drop:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        reasons: list[str | None] = [None] * len(batch)
        values: list[float | None] = [None] * len(batch)
        new_texts: list[str | None] = batch["text"].to_pylist()
        for i, text in alive_rows(batch):
            result = self.transform(text or "")
            if isinstance(result, Drop):
                reasons[i] = f"{self.name}:{result.reason}"
                values[i] = result.value
            else:
                new_texts[i] = result
        return with_drops(replace_column(batch, "text", new_texts), reasons, values)
