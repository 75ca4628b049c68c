"""Text normalization before hashing: texts that differ only in ways we do not care about
(Unicode composition, letter case, runs of whitespace, optionally punctuation) normalize alike."""

from __future__ import annotations

import sys
import unicodedata
from functools import cache

import numpy as np

from pipeline.dedup.config import NormalizeConfig

_SPACE = np.uint32(ord(" "))


def normalize(text: str, config: NormalizeConfig) -> str:
    if config.unicode_form is not None:
        text = unicodedata.normalize(config.unicode_form, text)
    if config.casefold:
        text = text.casefold()
    if config.strip_punctuation:
        text = strip_punctuation(text)
    if config.collapse_whitespace:
        text = " ".join(text.split())
    return text


def strip_punctuation(text: str) -> str:
    """Every character of a Unicode punctuation (P*) or symbol (S*) category becomes a space.

    Done on the code points as a numpy array: several times faster than ``str.translate`` or a
    regex on text that is not pure ASCII, which is most web text (curly quotes, dashes).
    """
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    hits = is_punctuation()[codepoints]
    if not hits.any():
        return text
    return np.where(hits, _SPACE, codepoints).astype(np.uint32).tobytes().decode("utf-32-le")


# Unicode assigns punctuation and symbols only below this: planes 2 and 3 hold ideographs, plane 14
# tags and variation selectors, planes 15 and 16 private use (a test checks it for this Python).
PUNCTUATION_BELOW = 0x20000


@cache
def is_punctuation() -> np.ndarray:
    """A flag per code point; built once per process (a few hundredths of a second)."""
    flags = np.zeros(sys.maxunicode + 1, dtype=bool)
    flags[:PUNCTUATION_BELOW] = [unicodedata.category(chr(c))[0] in "PS" for c in range(PUNCTUATION_BELOW)]
    return flags
