"""Text normalization before hashing."""

from __future__ import annotations

from pipeline.dedup.config import NormalizeConfig
from pipeline.dedup.normalize import normalize, strip_punctuation


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
