"""Gopher's repetition and quality rules (Rae et al. 2021, "Scaling Language Models", appendix A).

Both filters follow datatrove's implementation, which FineWeb ran: the same order of checks, the
same ratios (a threshold is exceeded when the ratio is strictly beyond it) and the same word
splitting (``words.py``), so a document gets the same decision. Any threshold set to null is off.
One deliberate difference: datatrove compares the duplicated 5- to 10-grams as their words glued
together without spaces, so "ab c" and "a bc" count as the same n-gram; we compare words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import field
from typing import Annotated

import numpy as np
from pydantic import Field, NonNegativeFloat, NonNegativeInt

from pipeline.config import config_dataclass
from pipeline.filters.words import split_words
from pipeline.stage import Drop, DocumentFilter

Fraction = Annotated[float, Field(ge=0, le=1)]
NGramSize = Annotated[int, Field(ge=1)]


@config_dataclass
class GopherRepetitionConfig:
    # Shares of lines / paragraphs that repeat an earlier one, by count and by characters.
    max_duplicate_line_fraction: Fraction | None = 0.30
    max_duplicate_paragraph_fraction: Fraction | None = 0.30
    max_duplicate_line_char_fraction: Fraction | None = 0.20
    max_duplicate_paragraph_char_fraction: Fraction | None = 0.20
    # n -> most characters the most frequent n-gram may cover (its length times its count).
    max_top_ngram_char_fraction: dict[NGramSize, Fraction] = field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16}
    )
    # n -> most characters that repeated n-grams may cover.
    max_duplicate_ngram_char_fraction: dict[NGramSize, Fraction] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


def duplicate_stats(elements: list[str]) -> tuple[int, int]:
    """How many elements repeat an earlier one, and how many characters those repeats hold."""
    distinct = set(elements)
    return len(elements) - len(distinct), sum(map(len, elements)) - sum(map(len, distinct))


_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so n-gram hashes spread over all 64 bits


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal keys grouped: (each key's group id, each group's size, the index where it first occurs)."""
    order = np.argsort(keys, kind="stable")  # stable: a group's first occurrence sorts first
    starts = np.empty(len(keys), dtype=bool)
    starts[:1] = True
    np.not_equal(keys[order[1:]], keys[order[:-1]], out=starts[1:])
    group = np.empty(len(keys), dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    start_at = np.flatnonzero(starts)
    sizes = np.empty(len(start_at), dtype=np.int64)
    sizes[:-1] = start_at[1:] - start_at[:-1]
    sizes[-1:] = len(keys) - start_at[-1:]
    return group, sizes, order[start_at]


class _Repeated:
    """The n-grams of one length that occur more than once: where they start (ascending), which
    group of equal n-grams each start belongs to, and per group its size and first start."""

    def __init__(self, starts: np.ndarray, keys: np.ndarray):
        group, sizes, first = _group(keys)
        repeated = sizes > 1
        keep = repeated[group]
        self.starts = starts[keep]
        self.group = (np.cumsum(repeated) - 1)[group[keep]]
        self.sizes = sizes[repeated]
        self.first = starts[first[repeated]]
        self.later = self.starts[self.starts != self.first[self.group]]  # starts of repeats


class NGrams:
    """Counts a document's word n-grams without building them as strings.

    Each word is its 64-bit string hash and each n-gram a polynomial hash of its words' (a collision
    among one document's n-grams has a chance of about 1e-13), so counting equal n-grams of one
    length is a numpy sort. Most documents are far from every threshold, so the filter first asks
    for an upper bound (``*_bound``: a plain sort of the hashes, or the repeats of a length already
    grouped) and groups a length with its positions only when the bound leaves the decision open.
    """

    def __init__(self, words: list[str]):
        self.n_words = len(words)
        self.char_offsets = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=self.char_offsets[1:])
        self._hashes = {1: np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)}
        self._repeated: dict[int, _Repeated] = {}
        self._top_counts: dict[int, int] = {}

    def hashes(self, n: int) -> np.ndarray:
        """One hash per n-gram start (``n_words - n + 1`` of them)."""
        built = max(k for k in self._hashes if k <= n)
        h, words = self._hashes[built], self._hashes[1]
        with np.errstate(over="ignore"):
            for k in range(built + 1, n + 1):
                h = h[:-1] * _MULTIPLIER + words[k - 1 :]
                self._hashes[k] = h
        return h

    def repeated(self, n: int) -> _Repeated:
        """The repeated n-grams (n <= n_words)."""
        if n not in self._repeated:
            h = self.hashes(n)
            repeated = self._repeated[n] = _Repeated(np.arange(len(h)), h)
            self._top_counts[n] = int(repeated.sizes.max()) if len(repeated.sizes) else 1
        return self._repeated[n]

    def chars(self, start: int | np.ndarray, n: int):
        """Characters of the words of the n-gram(s) at ``start``, spaces not counted."""
        return self.char_offsets[start + n] - self.char_offsets[start]

    def top_ngram_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (its length with spaces, times its count).

        Among equally frequent n-grams the one that occurs first counts, as in datatrove.
        """
        repeated = self.repeated(n)
        if not len(repeated.sizes):  # every n-gram occurs once: the first one counts
            return int(self.chars(0, n)) + n - 1
        top = repeated.sizes.max()
        start = repeated.first[repeated.sizes == top].min()
        return (int(self.chars(start, n)) + n - 1) * int(top)

    def top_count(self, n: int) -> int:
        """How often the most frequent n-gram occurs (n <= n_words)."""
        if n not in self._top_counts:
            ordered = np.sort(self.hashes(n))
            changes = np.flatnonzero(ordered[1:] != ordered[:-1])
            runs = np.diff(changes, prepend=-1, append=len(ordered) - 1)
            self._top_counts[n] = int(runs.max())
        return self._top_counts[n]

    def top_ngram_chars_bound(self, n: int) -> int:
        """At least ``top_ngram_chars(n)``: its count, which is at most the top count of any shorter
        length (counted here if none is yet), times the longest n-gram's length; exact when no
        n-gram repeats (then the first one counts)."""
        count = min((c for k, c in self._top_counts.items() if k <= n), default=None) or self.top_count(n)
        if count == 1:
            return int(self.chars(0, n)) + n - 1
        return count * (int((self.char_offsets[n:] - self.char_offsets[:-n]).max()) + n - 1)

    def duplicate_ngram_chars(self, n: int) -> int:
        """Characters in n-grams that repeat an earlier one, scanning left to right.

        After a repeat the scan jumps past it, so overlapping repeats are not counted twice, and
        the skipped n-grams are not remembered as seen (datatrove's rule).
        """
        if self.n_words < n:
            return 0
        repeated = self.repeated(n)
        is_later = repeated.starts != repeated.first[repeated.group]
        skipped: set[int] = set()
        seen_again: set[int] = set()  # groups remembered at a later occurrence than their first
        resume = total = 0
        for start, group in zip(repeated.starts[is_later].tolist(), repeated.group[is_later].tolist()):
            if start < resume:
                continue
            if group in seen_again or int(repeated.first[group]) not in skipped:
                total += int(self.chars(start, n))
                resume = start + n
                skipped.update(range(start + 1, start + n))
            else:
                seen_again.add(group)
        return total

    def duplicate_ngram_chars_bound(self, n: int) -> int:
        """At least ``duplicate_ngram_chars(n)``: 0 when some k-gram (k <= n) never repeats, else the
        characters of the words covered by the n-grams that start where a k-gram repeats (k the
        longest length grouped, else n itself), as the counted n-grams start there and never overlap."""
        if self.n_words < n or any(count == 1 for k, count in self._top_counts.items() if k <= n):
            return 0
        starts = self.repeated(max((k for k in self._repeated if k <= n), default=n)).later
        starts = starts[: np.searchsorted(starts, self.n_words - n, side="right")]
        # Each start covers its n words, up to the next start: the union of the spans.
        ends = np.minimum(starts + n, np.append(starts[1:], self.n_words))
        return int((self.char_offsets[ends] - self.char_offsets[starts]).sum())


class GopherRepetitionFilter(DocumentFilter):
    """Drops documents whose lines, paragraphs or word n-grams repeat too much.

    Reasons: ``duplicate_paragraphs``, ``duplicate_paragraph_chars``, ``duplicate_lines``,
    ``duplicate_line_chars``, ``top_<n>_gram``, ``duplicate_<n>_grams``; the value is the ratio.
    """

    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig | None = None):
        super().__init__()
        self.config = config or GopherRepetitionConfig()
        self.top_ngrams = sorted(self.config.max_top_ngram_char_fraction.items())
        self.duplicate_ngrams = sorted(self.config.max_duplicate_ngram_char_fraction.items())

    def check(self, text: str) -> Drop | None:
        if not text:
            return Drop("empty")
        c = self.config
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        count, chars = duplicate_stats(paragraphs)
        if (drop := _exceeds("duplicate_paragraphs", count / len(paragraphs), c.max_duplicate_paragraph_fraction)) or (
            drop := _exceeds("duplicate_paragraph_chars", chars / len(text), c.max_duplicate_paragraph_char_fraction)
        ):
            return drop
        lines = _LINE_BREAK.split(text)
        count, chars = duplicate_stats(lines)
        if (drop := _exceeds("duplicate_lines", count / len(lines), c.max_duplicate_line_fraction)) or (
            drop := _exceeds("duplicate_line_chars", chars / len(text), c.max_duplicate_line_char_fraction)
        ):
            return drop

        words = split_words(text)
        ngrams = NGrams(words)
        for n, limit in self.top_ngrams:
            # The exact count only where an upper bound leaves the decision open.
            if len(words) >= n and ngrams.top_ngram_chars_bound(n) / len(text) > limit:
                if drop := _exceeds(f"top_{n}_gram", ngrams.top_ngram_chars(n) / len(text), limit):
                    return drop
        for n, limit in self.duplicate_ngrams:
            if ngrams.duplicate_ngram_chars_bound(n) / len(text) > limit:
                if drop := _exceeds(f"duplicate_{n}_grams", ngrams.duplicate_ngram_chars(n) / len(text), limit):
                    return drop
        return None


def _exceeds(reason: str, value: float, limit: float | None) -> Drop | None:
    return Drop(reason, value) if limit is not None and value > limit else None


def _falls_short(reason: str, value: float, limit: float | None) -> Drop | None:
    return Drop(reason, value) if limit is not None and value < limit else None


# Gopher's stop words: a document of real English prose uses at least two of them.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@config_dataclass
class GopherQualityConfig:
    # Counted over words that are not only symbols (see ``word_kind``).
    min_words: NonNegativeInt | None = 50
    max_words: NonNegativeInt | None = 100_000
    min_mean_word_length: NonNegativeFloat | None = 3
    max_mean_word_length: NonNegativeFloat | None = 10
    # Occurrences of "#", and of "..." or "…", per word.
    max_hash_ratio: NonNegativeFloat | None = 0.1
    max_ellipsis_ratio: NonNegativeFloat | None = 0.1
    # Shares of lines that start with a bullet ("•" or "-") or end with an ellipsis.
    max_bullet_lines: Fraction | None = 0.9
    max_ellipsis_lines: Fraction | None = 0.3
    # Share of words with at least one letter.
    min_alpha_words: Fraction | None = 0.8
    # How many different stop words the document must use (matched case-sensitively, like datatrove).
    min_stop_words: NonNegativeInt | None = 2
    stop_words: list[str] = field(default_factory=lambda: list(STOP_WORDS))


_SYMBOLS = frozenset("$+<=>^`|~")
_SYMBOL_CATEGORIES = frozenset({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Cc"})
_WORD_KINDS: dict[str, tuple[bool, bool]] = {}


def word_kind(word: str) -> tuple[bool, bool]:
    """(is a real word, has a letter). A word that is only symbols (Unicode punctuation, the ASCII
    symbols ``$+<=>^`|~`` and control characters: ``,`` ``--`` ``...``) is not a real word."""
    kind = _WORD_KINDS.get(word)
    if kind is None:
        if word.isalpha():
            kind = (True, True)
        else:
            kind = (
                not all(c in _SYMBOLS or unicodedata.category(c) in _SYMBOL_CATEGORIES for c in word),
                any(c.isalpha() for c in word),
            )
        if len(_WORD_KINDS) > 500_000:
            _WORD_KINDS.clear()
        _WORD_KINDS[word] = kind
    return kind


class GopherQualityFilter(DocumentFilter):
    """Drops documents that do not look like prose: too short or long, odd word lengths, many
    symbols, bullet lists, trailing ellipses, few words with letters, or no stop words.

    Reasons: ``too_few_words``, ``too_many_words``, ``short_words``, ``long_words``, ``hash_ratio``,
    ``ellipsis_ratio``, ``bullet_lines``, ``ellipsis_lines``, ``alpha_words``, ``stop_words``; the
    value is what was measured.
    """

    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig | None = None):
        super().__init__()
        self.config = config or GopherQualityConfig()
        self.stop_words = frozenset(self.config.stop_words)

    def check(self, text: str) -> Drop | None:
        c = self.config
        words = split_words(text)
        counts = Counter(words)
        n_real = real_chars = n_alpha = 0
        for word, count in counts.items():
            is_real, has_letter = word_kind(word)
            if is_real:
                n_real += count
                real_chars += count * len(word)
            if has_letter:
                n_alpha += count
        if (drop := _falls_short("too_few_words", n_real, c.min_words)) or (
            drop := _exceeds("too_many_words", n_real, c.max_words)
        ):
            return drop
        if n_real and (
            (drop := _falls_short("short_words", real_chars / n_real, c.min_mean_word_length))
            or (drop := _exceeds("long_words", real_chars / n_real, c.max_mean_word_length))
        ):
            return drop

        n_words = max(len(words), 1)
        if (drop := _exceeds("hash_ratio", text.count("#") / n_words, c.max_hash_ratio)) or (
            drop := _exceeds("ellipsis_ratio", (text.count("...") + text.count("…")) / n_words, c.max_ellipsis_ratio)
        ):
            return drop
        lines = text.splitlines() or [""]
        bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
        ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
        if (drop := _exceeds("bullet_lines", bullets / len(lines), c.max_bullet_lines)) or (
            drop := _exceeds("ellipsis_lines", ellipses / len(lines), c.max_ellipsis_lines)
        ):
            return drop
        if drop := _falls_short("alpha_words", n_alpha / n_words, c.min_alpha_words):
            return drop
        return _falls_short("stop_words", len(self.stop_words.intersection(counts)), c.min_stop_words)
