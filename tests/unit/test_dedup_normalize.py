"""Text normalization before hashing."""

from __future__ import annotations

import sys
import unicodedata

import numpy as np

from pipeline.dedup.config import NormalizeConfig
from pipeline.dedup.normalize import is_punctuation, normalize, strip_punctuation


def test_default_normalization_ignores_composition_case_and_spacing():
    config = NormalizeConfig()
    composed = "Caf\u00e9  STRASSE\n\tend"
    decomposed = "cafe\u0301 straße end"
    assert normalize(composed, config) == normalize(decomposed, config) == "café strasse end"


def test_punctuation_and_symbols_become_spaces():
    config = NormalizeConfig(strip_punctuation=True)
    assert normalize("Hello, world!!! 3½ €5 — «ok» e-mail", config) == "hello world 3½ 5 ok e mail"
    # Marks inside words are kept: Devanagari vowel signs are not punctuation.
    assert normalize("नमस्ते, दुनिया", config) == "नमस्ते दुनिया"


def test_each_step_can_be_turned_off():
    config = NormalizeConfig(unicode_form=None, casefold=False, collapse_whitespace=False)
    assert normalize("A  b\u0301", config) == "A  b\u0301"


def test_strip_punctuation_keeps_text_without_any():
    assert strip_punctuation("plain words only") == "plain words only"
    assert strip_punctuation("") == ""


def test_punctuation_table_covers_every_code_point_this_python_knows():
    """Built from the planes that hold punctuation and symbols only; the rest must hold none."""
    every = np.array([unicodedata.category(chr(c))[0] in "PS" for c in range(sys.maxunicode + 1)])
    assert np.array_equal(is_punctuation(), every)
