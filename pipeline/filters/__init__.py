"""The web-text filtering stages, one rule family per module, each built from its typed config.

    url_filter         url.py       host / URL-fragment blocklists
    language           language.py  fastText language ID; writes ``lang`` and ``lang_score``
    gopher_repetition  gopher.py    repeated lines, paragraphs and n-grams
    gopher_quality     gopher.py    word counts and lengths, symbols, bullets, stop words
    c4_quality         c4.py        boilerplate line removal, lorem ipsum, curly brackets, sentences
    fineweb_quality    fineweb.py   line punctuation, short lines, duplicated lines, newlines per word
    pii                pii.py       e-mail and public IP masking

``words.py`` holds the word and sentence splitting they share. ``pipeline.stages`` registers these
with the other stages and builds them from config.
"""

from __future__ import annotations

from pipeline.filters.c4 import C4QualityConfig, C4QualityFilter
from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.filters.gopher import (
    GopherQualityConfig,
    GopherQualityFilter,
    GopherRepetitionConfig,
    GopherRepetitionFilter,
)
from pipeline.filters.language import LanguageConfig, LanguageFilter
from pipeline.filters.pii import PIIConfig, PIIFormatter
from pipeline.filters.url import URLFilter, URLFilterConfig

# name -> (config class, stage class); a stage's ``name`` is its key, and prefixes its drop reasons.
STAGES: dict[str, tuple[type, type]] = {
    "url_filter": (URLFilterConfig, URLFilter),
    "language": (LanguageConfig, LanguageFilter),
    "gopher_repetition": (GopherRepetitionConfig, GopherRepetitionFilter),
    "gopher_quality": (GopherQualityConfig, GopherQualityFilter),
    "c4_quality": (C4QualityConfig, C4QualityFilter),
    "fineweb_quality": (FineWebQualityConfig, FineWebQualityFilter),
    "pii": (PIIConfig, PIIFormatter),
}
