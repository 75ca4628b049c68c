"""C4's line and document rules (Raffel et al. 2020, section 2.2), as datatrove applies them.

Each line is stripped and then removed if it has a word over ``max_word_length`` characters, does
not end in terminal punctuation (switchable: FineWeb turns this rule off), has fewer than
``min_words_per_line`` words, mentions "javascript", or carries cookie/terms-of-use boilerplate;
Wikipedia-style citation markers ("[1]", "[edit]", "[citation needed]") are cut from lines first.
Among the lines that reach them, "lorem ipsum" or a curly bracket drops the whole document, and
so does keeping fewer than ``min_sentences`` sentences. The rules run in that order on each line,
exactly as in datatrove, because the order decides which lines get to trigger a document drop.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import field

from pydantic import NonNegativeInt, PositiveInt

from pipeline.config import config_dataclass
from pipeline.filters.words import count_sentences
from pipeline.stage import Drop, TextTransform

POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_TERMINAL = (".", "?", "!", '"', "'")


@config_dataclass
class C4QualityConfig:
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_words_per_line: NonNegativeInt = 3
    max_word_length: PositiveInt | None = 1000
    filter_javascript: bool = True
    filter_policy: bool = True
    policy_phrases: list[str] = field(default_factory=lambda: list(POLICY_PHRASES))
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    # Sentences (spaCy's rule-based sentencizer) counted over the kept lines; null turns it off.
    min_sentences: PositiveInt | None = 5


class C4QualityFilter(TextTransform):
    """Removes boilerplate lines; drops documents with ``lorem_ipsum``, ``curly_bracket`` or
    ``too_few_sentences`` (value: the sentences counted). For the documents it keeps, removed lines
    are counted in ``stats`` as ``lines_removed:<rule>`` and cut citation markers as
    ``citations_removed``."""

    name = "c4_quality"

    def __init__(self, config: C4QualityConfig | None = None):
        super().__init__()
        self.config = config or C4QualityConfig()
        self.policy_phrases = tuple(phrase.lower() for phrase in self.config.policy_phrases)

    def transform(self, text: str) -> str | Drop:
        c = self.config
        removed: Counter[str] = Counter()
        kept: list[str] = []
        sentences = 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if c.max_word_length is not None and any(len(word) > c.max_word_length for word in words):
                removed["lines_removed:long_word"] += 1
                continue
            if c.remove_citations and "[" in line:
                line, cut = _CITATION.subn("", line)
                removed["citations_removed"] += cut
            if c.filter_no_terminal_punct and (not line.endswith(_TERMINAL) or line.endswith("...")):
                removed["lines_removed:no_terminal_punct"] += 1
                continue
            if len(words) < c.min_words_per_line:
                removed["lines_removed:few_words"] += 1
                continue
            lowered = line.lower()
            if c.filter_lorem_ipsum and "lorem ipsum" in lowered:
                return Drop("lorem_ipsum")
            if c.filter_javascript and "javascript" in lowered:
                removed["lines_removed:javascript"] += 1
                continue
            if c.filter_curly_bracket and "{" in line:
                return Drop("curly_bracket")
            if c.filter_policy and any(phrase in lowered for phrase in self.policy_phrases):
                removed["lines_removed:policy"] += 1
                continue
            if c.min_sentences is not None and sentences < c.min_sentences:
                # Only "fewer than the minimum" matters, so counting stops once it is reached.
                sentences += count_sentences(line, stop_at=c.min_sentences - sentences)
            kept.append(line)
        if c.min_sentences is not None and sentences < c.min_sentences:
            return Drop("too_few_sentences", sentences)
        self.stats.update(removed)
        return "\n".join(kept).strip()
