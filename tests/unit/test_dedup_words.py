"""Words of a batch of texts on their UTF-8 bytes: the same as ``normalize`` then ``str.split``."""

from __future__ import annotations

import random
import sys
import unicodedata
from itertools import product

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.config import NormalizeConfig
from pipeline.dedup.normalize import is_punctuation, normalize
from pipeline.dedup.words import TABLE_SIZE, composition_seconds, split_words

EVERY_CONFIG = [
    NormalizeConfig(unicode_form=form, casefold=casefold, strip_punctuation=strip)
    for form, casefold, strip in product(["NFC", "NFKC", "NFD", "NFKD", None], [True, False], [True, False])
]
# Characters where a shortcut would go wrong: combining marks in and out of canonical order,
# characters that compose with the one before (Hangul jamo, Bengali and Tamil vowel signs),
# foldings that change length (ß, İ, the Kelvin sign, ligatures), whitespace past ASCII,
# punctuation and symbols of every width, and characters past the tables.
TRICKY = (
    "\u0300\u0301\u0327\u0345\u1100\u1161\u11a8\uac00\u09be\u09c7\u0bbe\u0bc6\u3099\u304b"
    "\u00df\u0130\u212a\ufb01\u1e9e\u03a3\u03c2\u0587\u00c9e\u0085\u00a0\u2028\u3000\u202f"
    "\u00ab\u2014\u20ac\u00bd\u2460\u24b6\U0001f600\U0001d15e\U0001d165\U00020000\U0002f800"
)


def words_of(texts, config: NormalizeConfig) -> list[list[str]]:
    words = split_words(texts, config)
    assert words.counts.sum() == len(words.indices)
    per_text, start = [], 0
    for count in words.counts.tolist():
        per_text.append([words.distinct[i].decode() for i in words.indices[start : start + count]])
        start += count
    return per_text


def reference(texts: list[str | None], config: NormalizeConfig) -> list[list[str]]:
    return [normalize(text or "", config).split() for text in texts]


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    plain = "ab AZ,.\t\n-"
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randrange(0, 30)):
            draw = rng.random()
            if draw < 0.3:
                chars.append(rng.choice(TRICKY))
            elif draw < 0.5:  # any character at all, surrogates (never in Arrow text) aside
                chars.append(chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x30000)])))
            else:
                chars.append(rng.choice(plain))
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize("config", EVERY_CONFIG, ids=repr)
def test_random_text_splits_as_the_reference_does(config):
    texts = random_texts(seed=EVERY_CONFIG.index(config), count=1500)
    assert words_of(texts, config) == reference(texts, config)


def test_every_language_of_the_corpus_splits_as_the_reference_does(corpus):
    texts = []
    for path in sorted((corpus / "lang" / "sentences").glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        texts += [" ".join(lines[i : i + 5]) for i in range(0, min(len(lines), 200), 5)]
    assert len(texts) > 2000
    for config in (NormalizeConfig(strip_punctuation=True), NormalizeConfig(unicode_form="NFKC")):
        assert words_of(texts, config) == reference(texts, config)


def test_words_end_with_their_text_and_nulls_have_none():
    config = NormalizeConfig(strip_punctuation=True)
    texts = ["ab", "cd é", "É", None, "", " ,", "x\u0301", "\u0301y", "Straße!", "ﬁn"]
    assert words_of(texts, config) == [["ab"], ["cd", "é"], ["é"], [], [], [], ["x\u0301"], ["\u0301y"], ["strasse"], ["fin"]]


def test_arrow_slices_and_chunks_give_the_same_words():
    config = NormalizeConfig(strip_punctuation=True)
    texts = random_texts(seed=7, count=300)
    expected = reference(texts, config)
    array = pa.array(texts, pa.string())
    assert words_of(array.slice(100, 50), config) == expected[100:150]
    assert words_of(pa.chunked_array([array.slice(0, 120), array.slice(120)]), config) == expected


def test_the_tables_hold_every_character_that_matters():
    """Past the tables no character is whitespace, punctuation or a symbol, or changes when
    case-folded, and no character composes with one before it."""
    past = [chr(c) for c in range(TABLE_SIZE, sys.maxunicode + 1)]
    assert not any(ch.isspace() or ch.casefold() != ch for ch in past)
    assert not is_punctuation()[TABLE_SIZE:].any()
    assert composition_seconds(limit=sys.maxunicode + 1) == composition_seconds()


def test_case_folding_never_makes_or_unmakes_a_separator():
    """Why words can be case-folded after the split: a character and its folding are both
    separators or both not."""
    punctuation = is_punctuation()

    def separator(ch: str) -> bool:
        return ch.isspace() or bool(punctuation[ord(ch)])

    for codepoint in np.flatnonzero(~np.isin(np.arange(TABLE_SIZE), np.arange(0xD800, 0xE000))).tolist():
        ch = chr(codepoint)
        folded = ch.casefold()
        if folded != ch:
            assert all(separator(f) == separator(ch) for f in folded), unicodedata.name(ch, hex(codepoint))
