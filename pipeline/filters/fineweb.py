"""FineWeb's own quality rules (Penedo et al. 2024, section 3.6), as datatrove implements them.

A document is dropped when, over its non-blank lines, too few end in terminal punctuation
(``line_punct``), too many are short (``short_lines``), too many characters sit in lines that
repeat an earlier line (``duplicate_line_chars``), or when it has many newlines per word, as a
list does (``newline_ratio``). The value is the measured ratio.

On the duplicated-line threshold the paper says 0.1 and datatrove's code, which produced the
dataset, defaults to 0.01; see ``jobs/configs/stages/fineweb.yaml`` for the one our preset uses.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from pipeline.config import config_dataclass
from pipeline.filters.gopher import duplicate_stats
from pipeline.filters.words import TERMINAL_PUNCTUATION, split_words
from pipeline.stage import Drop, DocumentFilter

Fraction = Annotated[float, Field(ge=0, le=1)]


@config_dataclass
class FineWebQualityConfig:
    # Least share of lines that end in terminal punctuation (Unicode Sentence_Terminal).
    min_line_punct_ratio: Fraction = 0.12
    # Keep documents where no line at all ends in punctuation (e.g. some scripts have none).
    line_punct_exclude_zero: bool = False
    # Most share of lines that are at most ``short_line_length`` characters long.
    max_short_line_ratio: Fraction = 0.67
    short_line_length: NonNegativeInt = 30
    # Most share of characters (newlines not counted) in lines that repeat an earlier line.
    max_duplicate_line_chars: Fraction = 0.01
    # Most newlines per word.
    max_newline_ratio: NonNegativeFloat = 0.3


class FineWebQualityFilter(DocumentFilter):
    """Reasons: ``line_punct``, ``short_lines``, ``duplicate_line_chars``, ``newline_ratio``,
    ``empty``; the value is the measured ratio."""

    name = "fineweb_quality"

    def __init__(self, config: FineWebQualityConfig | None = None):
        super().__init__()
        self.config = config or FineWebQualityConfig()

    def check(self, text: str) -> Drop | None:
        c = self.config
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return Drop("empty")
        # Lines are not stripped here: trailing spaces after a full stop count as no punctuation.
        ratio = sum(line[-1] in TERMINAL_PUNCTUATION for line in lines) / len(lines)
        if ratio < c.min_line_punct_ratio and not (ratio == 0 and c.line_punct_exclude_zero):
            return Drop("line_punct", ratio)
        ratio = sum(len(line) <= c.short_line_length for line in lines) / len(lines)
        if ratio > c.max_short_line_ratio:
            return Drop("short_lines", ratio)
        ratio = duplicate_stats(lines)[1] / (len(text) - text.count("\n"))
        if ratio > c.max_duplicate_line_chars:
            return Drop("duplicate_line_chars", ratio)
        ratio = text.count("\n") / len(split_words(text))
        if ratio > c.max_newline_ratio:
            return Drop("newline_ratio", ratio)
        return None
