"""Removes (or flags) documents that share a word n-gram with an evaluation set.

A model that trained on the test questions scores well for the wrong reason. Following GPT-3's
decontamination, both sides are normalized the same way (NFKC, case-folded, punctuation dropped,
split into words) and a document is contaminated when any of its 13-grams occurs in an item of an
evaluation set. The drop reason names the evaluation set; the value is how many of the document's
n-grams it shares with it.

An evaluation set is a JSONL file. An item gives one text per combination of its configured
fields, joined in order, a list field (like HellaSwag's ``endings``) giving one text per element:
``ctx + endings[i]`` for each ending. So a page that quotes a context and any of its endings (the
correct one is rarely the first) shares the n-grams that cross from one into the other. The
manifest records, per evaluation set, its items and how many were long enough to give an n-gram.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import config_dataclass
from pipeline.corpus import corpus_path
from pipeline.documents import alive_rows
from pipeline.stage import DocumentFilter, Drop

FLAG_COLUMN = "eval_overlap"


@config_dataclass
class EvalSetConfig:
    # A JSONL file; a relative path is read from the shared corpus ($CORPUS_DIR).
    path: str = "eval/hellaswag-val-1000.jsonl"
    fields: list[str] = field(default_factory=lambda: ["ctx", "endings"])
    # Names the drop reason; defaults to the file name without its suffixes.
    name: str | None = None


@config_dataclass
class DecontaminateConfig:
    eval_sets: list[EvalSetConfig] = field(default_factory=lambda: [EvalSetConfig()])
    n: Annotated[int, Field(ge=1)] = 13
    # drop: remove the document; flag: keep it and write the shared n-gram count to ``eval_overlap``.
    mode: Literal["drop", "flag"] = "drop"


_WORD = re.compile(r"\w+")


def normalized_words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def eval_set_items(config: EvalSetConfig) -> list[list[str]]:
    """Each item of one evaluation set as its texts: one per combination of its list fields' elements."""
    path = Path(config.path) if Path(config.path).is_absolute() else corpus_path(config.path)
    items = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            item = json.loads(line)
            missing = [name for name in config.fields if name not in item]
            if missing:
                raise ValueError(f"{path}:{line_number}: item has no field {missing[0]!r}")
            texts = [""]
            for name in config.fields:
                value = item[name]
                texts = [f"{text} {part}" for text in texts for part in (value if isinstance(value, list) else [value])]
            items.append(texts)
    return items


def eval_set_ngrams(config: EvalSetConfig, n: int) -> set[tuple[str, ...]]:
    """Every n-gram of every text of every item of one evaluation set."""
    return {gram for texts in eval_set_items(config) for text in texts for gram in ngrams(normalized_words(text), n)}


def eval_set_summaries(config: DecontaminateConfig) -> dict[str, dict[str, int]]:
    """Per evaluation set: its items, how many gave at least one n-gram (an item shorter than n
    words cannot be caught), and its distinct n-grams. For the manifest."""
    summaries = {}
    for eval_set in config.eval_sets:
        items = eval_set_items(eval_set)
        contributing = sum(any(len(normalized_words(text)) >= config.n for text in texts) for texts in items)
        summaries[eval_set_name(eval_set)] = {"items": len(items), "items_with_ngrams": contributing,
                                              "ngrams": len(eval_set_ngrams(eval_set, config.n))}
    return summaries


def eval_set_name(config: EvalSetConfig) -> str:
    return config.name or Path(config.path).name.split(".")[0]


class Decontaminate(DocumentFilter):
    name = "decontaminate"

    def __init__(self, config: DecontaminateConfig):
        super().__init__()
        self.config = config
        self.eval_sets = [(eval_set_name(c), eval_set_ngrams(c, config.n)) for c in config.eval_sets]

    def overlap(self, text: str) -> tuple[str, int] | None:
        """The first evaluation set this text shares n-grams with, and how many it shares."""
        document = set(ngrams(normalized_words(text), self.config.n))
        for name, eval_ngrams in self.eval_sets:
            shared = len(document & eval_ngrams)
            if shared:
                return name, shared
        return None

    def check(self, text: str) -> Drop | None:
        found = self.overlap(text)
        return Drop(found[0], float(found[1])) if found else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.config.mode == "drop":
            return super().__call__(batch)
        return self.flag(batch)

    def flag(self, batch: pa.Table) -> pa.Table:
        """Keeps every document and writes its shared n-gram count (null for rows already dropped)."""
        counts: list[int | None] = [None] * len(batch)
        for i, text in alive_rows(batch):
            found = self.overlap(text or "")
            counts[i] = found[1] if found else 0
            if found:
                self.stats[f"flagged:{found[0]}"] += 1
        return batch.append_column(FLAG_COLUMN, pa.array(counts, pa.int64()))
