"""The words of a batch of texts once normalized: ``normalize(text, config).split()`` for each text,
as UTF-8, computed on the texts' Arrow buffer instead of one Python call per text per step.

Word shingles need only the words, and most of normalizing can be done on UTF-8 bytes for a whole
batch in a few numpy passes:

- Unicode normalization changes only texts holding a character that is not stable under it in every
  context. The others skip it; those few go through ``unicodedata`` one by one.
- Whitespace, and punctuation and symbols when they are stripped, separate words. A table per code
  point marks them: ASCII bytes are looked up directly, other characters once decoded from their
  lead byte.
- Case folding maps each character on its own and never turns a separator into a word character or
  back (a test checks every code point), so it can follow the split: ASCII letters by one table
  lookup, then each distinct word holding other characters through ``str.casefold``.

Every step gives what the reference path (``normalize``, then ``str.split``) gives; the tests compare
the two on the shared corpus's languages and on random text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.config import NormalizeConfig
from pipeline.dedup.normalize import PUNCTUATION_BELOW, is_punctuation

# The character tables cover the code points below this. Unicode has no whitespace, punctuation or
# symbol past it (tests check), and a text holding a character past it is normalized the slow way.
TABLE_SIZE = PUNCTUATION_BELOW
# Hangul vowels and trailing consonants compose with the syllable before them by an algorithm that
# ``unicodedata.decomposition`` does not list.
_HANGUL_VOWELS = range(0x1161, 0x1176)
_HANGUL_TRAILS = range(0x11A8, 0x11C3)
# How a character case-folds: not at all, to one character of the same UTF-8 length, or otherwise.
_UNCHANGED, _SAME_LENGTH, _OTHERWISE = 0, 1, 2
_ASCII_LOWER = np.array([ord(chr(b).lower()) if b < 0x80 else b for b in range(256)], dtype=np.uint8)


@dataclass
class Words:
    """The words of a batch of texts: ``distinct[indices[k]]`` is the k-th word, text after text, and
    text i has ``counts[i]`` of them."""

    distinct: list[bytes]
    indices: np.ndarray
    counts: np.ndarray


def split_words(texts: pa.Array | pa.ChunkedArray | Sequence[str], config: NormalizeConfig) -> Words:
    """Null texts have no words. ``config.collapse_whitespace`` changes no word, so it is not read."""
    utf8 = Utf8.of(_large_utf8(texts))
    if config.unicode_form is not None:
        utf8 = _unicode_normalized(utf8, config.unicode_form)
    separator = _separator_bytes(utf8, config.strip_punctuation)
    kept = ~separator
    # Words are runs of kept bytes, cut where one text ends and the next begins.
    starts = kept.copy()
    starts[1:] &= separator[:-1]
    ends = kept.copy()
    ends[:-1] &= separator[1:]
    boundaries = utf8.offsets[(utf8.offsets > 0) & (utf8.offsets < len(utf8.data))]
    starts[boundaries] = kept[boundaries]
    ends[boundaries - 1] = kept[boundaries - 1]
    word_starts = np.flatnonzero(starts)
    lengths = np.flatnonzero(ends) + 1 - word_starts
    data, slow_fold = _casefolded(utf8) if config.casefold else (utf8.data, None)
    words = pa.Array.from_buffers(
        pa.large_binary(), len(word_starts),
        [None, pa.py_buffer(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)), pa.py_buffer(data[kept])],
    )
    encoded = words.dictionary_encode()
    distinct, indices = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    if slow_fold is not None:
        # Words holding a character whose folding changes its length: str.casefold, once per distinct word.
        holding = np.searchsorted(word_starts, np.flatnonzero(slow_fold & kept), side="right") - 1
        for word in np.unique(indices[holding]).tolist():
            distinct[word] = distinct[word].decode().casefold().encode()
    return Words(distinct, indices, np.diff(np.searchsorted(word_starts, utf8.offsets)))


@dataclass
class Utf8:
    """A batch of texts as one run of UTF-8 bytes, with every multi-byte character decoded."""

    data: np.ndarray
    offsets: np.ndarray  # where each text starts in ``data``, and where the last one ends
    leads: np.ndarray  # where each multi-byte character starts
    codepoints: np.ndarray  # ... its code point
    lengths: np.ndarray  # ... and its length in bytes

    @classmethod
    def of(cls, texts: pa.Array) -> Utf8:
        _, offset_buffer, data_buffer = texts.buffers()
        offsets = np.frombuffer(offset_buffer, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
        if len(texts) == 0 or data_buffer is None:
            data = np.empty(0, np.uint8)
        else:
            data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        leads = np.flatnonzero(data >= 0xC0)
        first = data[leads].astype(np.uint32)
        lengths = 2 + (first >= 0xE0) + (first >= 0xF0)
        last = len(data) - 1
        c1, c2, c3 = (data[np.minimum(leads + k, last)].astype(np.uint32) & 0x3F for k in (1, 2, 3))
        codepoints = np.select(
            [lengths == 2, lengths == 3],
            [((first & 0x1F) << 6) | c1, ((first & 0x0F) << 12) | (c1 << 6) | c2],
            ((first & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3,
        )
        return cls(data, offsets - offsets[0], leads, codepoints, lengths)

    def texts(self) -> pa.Array:
        return pa.Array.from_buffers(
            pa.large_string(), len(self.offsets) - 1, [None, pa.py_buffer(self.offsets), pa.py_buffer(self.data)]
        )


def _large_utf8(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(texts, pa.large_string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return pc.fill_null(texts.cast(pa.large_string()), "")


def _in_table(table: np.ndarray, codepoints: np.ndarray) -> np.ndarray:
    """``table[codepoint]``, 0 (False) past the table's end."""
    inside = codepoints < len(table)
    return np.where(inside, table[np.where(inside, codepoints, 0)], table.dtype.type(0))


def _unicode_normalized(utf8: Utf8, form: str) -> Utf8:
    """The texts in ``form``. A text passes as it is if each of its characters is stable under the
    form and their combining classes never decrease (Unicode's quick check, UAX #15), else it goes
    through ``unicodedata.normalize``."""
    unstable = ~_in_table(_stable(form), utf8.codepoints)
    classes = _in_table(_combining_classes(), utf8.codepoints)
    # A character right after another whose (nonzero) class is higher would be reordered. ASCII is
    # class 0, so only adjacent multi-byte characters can be out of order.
    adjacent = utf8.leads[1:] == utf8.leads[:-1] + utf8.lengths[:-1]
    unstable[1:] |= adjacent & (classes[1:] != 0) & (classes[:-1] > classes[1:])
    if not unstable.any():
        return utf8
    texts = utf8.texts()
    rows = np.unique(np.searchsorted(utf8.offsets, utf8.leads[unstable], side="right") - 1)
    normalized = [unicodedata.normalize(form, text) for text in texts.take(rows).to_pylist()]
    mask = np.zeros(len(texts), dtype=bool)
    mask[rows] = True
    return Utf8.of(pc.replace_with_mask(texts, pa.array(mask), pa.array(normalized, pa.large_string())))


def _separator_bytes(utf8: Utf8, strip_punctuation: bool) -> np.ndarray:
    table = _separators(strip_punctuation)
    ascii_table = table[:256].copy()
    ascii_table[0x80:] = False  # bytes of multi-byte characters: marked below, per character
    separator = ascii_table[utf8.data]
    hit = _in_table(table, utf8.codepoints)
    for k in range(4):
        separator[utf8.leads[hit & (utf8.lengths > k)] + k] = True
    return separator


def _casefolded(utf8: Utf8) -> tuple[np.ndarray, np.ndarray]:
    """The bytes case-folded where a character folds to one of the same UTF-8 length (almost all
    that change), and a flag on the first byte of each character that folds otherwise."""
    data = _ASCII_LOWER[utf8.data]
    folded_to, folds = _folding()
    fold = _in_table(folds, utf8.codepoints)  # past the table: 0, _UNCHANGED
    for length in (2, 3, 4):
        at = (fold == _SAME_LENGTH) & (utf8.lengths == length)
        _write_utf8(data, utf8.leads[at], folded_to[utf8.codepoints[at]], length)
    slow = np.zeros(len(data), dtype=bool)
    slow[utf8.leads[fold == _OTHERWISE]] = True
    return data, slow


def _write_utf8(data: np.ndarray, positions: np.ndarray, codepoints: np.ndarray, length: int) -> None:
    lead_marks = {2: 0xC0, 3: 0xE0, 4: 0xF0}
    for k in range(length):
        shift = 6 * (length - 1 - k)
        bits = (codepoints >> shift) & 0x3F
        data[positions + k] = (lead_marks[length] | (codepoints >> shift)) if k == 0 else (0x80 | bits)


@cache
def _folding() -> tuple[np.ndarray, np.ndarray]:
    """Per code point: the one character it folds to (else itself), and how it folds."""
    folded_to = np.arange(TABLE_SIZE, dtype=np.uint32)
    folds = np.full(TABLE_SIZE, _UNCHANGED, dtype=np.uint8)
    for codepoint in range(TABLE_SIZE):
        ch = chr(codepoint)
        folded = ch.casefold()
        if folded == ch:
            continue
        folds[codepoint] = _OTHERWISE
        if len(folded) == 1 and len(folded.encode()) == len(ch.encode()):
            folded_to[codepoint] = ord(folded)
            folds[codepoint] = _SAME_LENGTH
    return folded_to, folds


@cache
def _separators(strip_punctuation: bool) -> np.ndarray:
    """Per code point: does it separate words (``str.isspace``, or punctuation/symbol when stripped)?"""
    flags = np.array([chr(c).isspace() for c in range(TABLE_SIZE)])
    return flags | is_punctuation()[:TABLE_SIZE] if strip_punctuation else flags


@cache
def _stable(form: str) -> np.ndarray:
    """Per code point: is it stable under ``form`` whatever surrounds it (its quick check is yes)?

    It is if it is its own normalization and, for the composing forms, nothing before it can
    compose with it.
    """
    flags = np.array([unicodedata.normalize(form, ch) == ch for ch in map(chr, range(TABLE_SIZE))])
    if form in ("NFC", "NFKC"):
        flags[sorted(composition_seconds())] = False
        flags[_HANGUL_VOWELS] = flags[_HANGUL_TRAILS] = False
    return flags


@cache
def _combining_classes() -> np.ndarray:
    return np.array([unicodedata.combining(ch) for ch in map(chr, range(TABLE_SIZE))], dtype=np.uint8)


def composition_seconds(limit: int = TABLE_SIZE) -> set[int]:
    """The code points below ``limit`` that are the second of a two-character canonical decomposition."""
    seconds = set()
    for codepoint in range(limit):
        parts = unicodedata.decomposition(chr(codepoint)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(int(parts[1], 16))
    return {c for c in seconds if c < TABLE_SIZE}
