"""Labeled text files for classification: TSV, CSV or JSONL with a text and a label column.

The label names come from the data (sorted, so class ids do not depend on the file's order).
Tokenized texts are right-padded with the end-of-text token to the longest in the batch; the model
reads each row's last real token, so the padding id does not matter.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class LabeledText:
    text: str
    label: int


def read_labeled(path: str | Path, text_column: str, label_column: str,
                 columns: list[str] | None = None) -> tuple[list[LabeledText], list[str]]:
    """-> (examples, label names). ``columns`` names the columns of a TSV/CSV without a header row
    (the SMS spam file is ``label<TAB>text``); None: the first row is the header."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as file:
            records = [json.loads(line) for line in file if line.strip()]
    elif path.suffix in (".tsv", ".csv"):
        with path.open(newline="", encoding="utf-8") as file:
            # Tabs cannot occur inside a TSV field, so quotes in it are plain text (as in the SMS file).
            rows = (csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv"
                    else csv.reader(file))
            header = columns or next(rows)
            records = [dict(zip(header, row)) for row in rows if row]
    else:
        raise ValueError(f"{path}: a labeled file must be .tsv, .csv or .jsonl")
    for key in (text_column, label_column):
        if records and key not in records[0]:
            raise ValueError(f"{path}: no column {key!r} (columns: {sorted(records[0])})")
    labels = sorted({str(record[label_column]) for record in records})
    if len(labels) < 2:
        raise ValueError(f"{path}: needs at least two labels in column {label_column!r}, found {labels}")
    index = {label: i for i, label in enumerate(labels)}
    return [LabeledText(str(record[text_column]), index[str(record[label_column])]) for record in records], labels


@dataclass(frozen=True)
class TokenizedExample:
    tokens: list[int]
    label: int


def classification_collate(examples: list[TokenizedExample], pad_token: int) -> dict[str, torch.Tensor]:
    """-> input_ids (B, longest) right-padded, lengths (B,), labels (B,)."""
    longest = max(len(example.tokens) for example in examples)
    input_ids = torch.full((len(examples), longest), pad_token, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.tokens)] = torch.tensor(example.tokens, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "lengths": torch.tensor([len(example.tokens) for example in examples], dtype=torch.long),
        "labels": torch.tensor([example.label for example in examples], dtype=torch.long),
    }
