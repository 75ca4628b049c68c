"""Gopher repetition and quality rules, each alone at its published threshold: a hand-built document
just inside the threshold is kept, one just outside is dropped with the rule's reason and value."""

import itertools
import random
from collections import Counter
from dataclasses import asdict

import pytest

from pipeline.filters.gopher import (
    GopherQualityConfig,
    NGrams,
    GopherQualityFilter,
    GopherRepetitionConfig,
    GopherRepetitionFilter,
)
from pipeline.stage import Drop


def distinct_words(count: int, start: int = 0, length: int = 5) -> list[str]:
    """Different lower-case words with no stop word among them: "qaaaa", "qaaab", ..."""
    words = []
    for i in range(start, start + count):
        letters = ""
        for _ in range(length - 1):
            i, r = divmod(i, 26)
            letters = chr(ord("a") + r) + letters
        words.append("q" + letters)
    return words


def filler(chars: int, start: int = 0) -> str:
    """Distinct words separated by spaces, exactly ``chars`` characters long."""
    words = distinct_words(chars // 6 + 1, start)
    text = " ".join(words)[:chars]
    return text if not text.endswith(" ") else text[:-1] + "z"


def shortest_length_within(chars: int, limit: float) -> int:
    """The shortest text in which ``chars`` characters are a share of at most ``limit``."""
    return next(length for length in itertools.count(1) if chars / length <= limit)


def repetition_rule(field: str, value=None) -> GopherRepetitionFilter:
    """A filter with every rule off but one (at its default threshold unless given)."""
    default = GopherRepetitionConfig()
    off = {"max_top_ngram_char_fraction": {}, "max_duplicate_ngram_char_fraction": {}}
    off |= {name: None for name in asdict(default) if name.startswith("max_duplicate_") and "ngram" not in name}
    options = {**off, field: value if value is not None else getattr(default, field)}
    return GopherRepetitionFilter(GopherRepetitionConfig(**options))


def test_repetition_defaults_are_gophers_published_thresholds():
    c = GopherRepetitionConfig()
    assert (c.max_duplicate_line_fraction, c.max_duplicate_paragraph_fraction) == (0.3, 0.3)
    assert (c.max_duplicate_line_char_fraction, c.max_duplicate_paragraph_char_fraction) == (0.2, 0.2)
    assert c.max_top_ngram_char_fraction == {2: 0.2, 3: 0.18, 4: 0.16}
    assert c.max_duplicate_ngram_char_fraction == {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.1}


@pytest.mark.parametrize(
    ("separator", "field", "reason"),
    [
        ("\n\n", "max_duplicate_paragraph_fraction", "duplicate_paragraphs"),
        ("\n", "max_duplicate_line_fraction", "duplicate_lines"),
    ],
)
def test_duplicate_paragraph_and_line_counts(separator, field, reason):
    check = repetition_rule(field).check
    # 10 parts; a short part repeated 3 times (0.3) is allowed, 4 times (0.4) is not.
    def text(repeats):
        unique = [" ".join(distinct_words(5, 10 * i)) for i in range(9 - repeats)]
        return separator.join(unique + ["ok"] * (repeats + 1))

    assert check(text(3)) is None
    assert check(text(4)) == Drop(reason, 0.4)


@pytest.mark.parametrize(
    ("separator", "field", "reason"),
    [
        ("\n\n", "max_duplicate_paragraph_char_fraction", "duplicate_paragraph_chars"),
        ("\n", "max_duplicate_line_char_fraction", "duplicate_line_chars"),
    ],
)
def test_duplicate_paragraph_and_line_characters(separator, field, reason):
    check = repetition_rule(field).check
    part = filler(100, start=5000)
    # A 100-character part repeated once in a 500-character text is 0.2 of it: allowed.
    inside = separator.join([filler(500 - 200 - 2 * len(separator)), part, part])
    outside = separator.join([filler(499 - 200 - 2 * len(separator)), part, part])
    assert len(inside) == 500 and check(inside) is None
    assert check(outside) == Drop(reason, 100 / 499)


@pytest.mark.parametrize(("n", "limit"), [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_top_ngram_characters(n, limit):
    check = repetition_rule("max_top_ngram_char_fraction", {n: limit}).check
    phrase = distinct_words(n, start=9000)  # n five-letter words: 6n - 1 characters with spaces
    covered = 10 * (6 * n - 1)

    def text(length):
        # the phrase 10 times, each followed by a distinct word; the last filler sets the length
        parts = [" ".join(phrase + [word]) for word in distinct_words(9)]
        body = " ".join(parts + [" ".join(phrase)])
        return body + " " + filler(length - len(body) - 1, start=20000)

    shortest = shortest_length_within(covered, limit)
    assert check(text(shortest)) is None
    assert check(text(shortest - 1)) == Drop(f"top_{n}_gram", covered / (shortest - 1))


@pytest.mark.parametrize(("n", "limit"), [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])
def test_duplicate_ngram_characters(n, limit):
    check = repetition_rule("max_duplicate_ngram_char_fraction", {n: limit}).check
    phrase = " ".join(distinct_words(n, start=9000))
    repeated = 5 * n  # the second occurrence's characters, spaces not counted

    def text(length):
        head = f"{phrase} qzzzz {phrase}"
        return head + " " + filler(length - len(head) - 1)

    shortest = shortest_length_within(repeated, limit)
    assert check(text(shortest)) is None
    assert check(text(shortest - 1)) == Drop(f"duplicate_{n}_grams", repeated / (shortest - 1))


def test_duplicate_ngrams_skip_past_a_repeat_and_forget_what_they_skipped():
    check = repetition_rule("max_duplicate_ngram_char_fraction", {5: 0.0}).check
    # The 2nd and 3rd copies of "a b c d e" each count 5 characters once: no overlapping recount.
    text = "a b c d e a b c d e a b c d e"
    assert check(text) == Drop("duplicate_5_grams", 10 / len(text))
    # 2-grams: "a b" repeats at 2, so the scan jumps to 4 and never records "b c" at 3; the "b c"
    # at 5 is then a first sighting, not a repeat: 2 characters, not 4.
    check = repetition_rule("max_duplicate_ngram_char_fraction", {2: 0.0}).check
    text = "a b a b c b c"
    assert check(text) == Drop("duplicate_2_grams", 2 / len(text))


def test_repetition_drops_empty_text():
    assert GopherRepetitionFilter().check("") == Drop("empty")


def quality_rule(field: str, value=None) -> GopherQualityFilter:
    default = GopherQualityConfig()
    off = {name: None for name in asdict(default) if name != "stop_words"}
    options = {**off, field: value if value is not None else getattr(default, field)}
    return GopherQualityFilter(GopherQualityConfig(**options))


def test_word_count_ignores_symbol_words():
    check = quality_rule("min_words").check
    assert check(" ".join(distinct_words(50))) is None
    assert check(" ".join(distinct_words(49)) + " , -- ... !") == Drop("too_few_words", 49)


def test_too_many_words():
    check = quality_rule("max_words").check
    assert check("word " * 100_000) is None
    assert check("word " * 100_001) == Drop("too_many_words", 100_001)


def test_mean_word_length_bounds():
    short, long_ = quality_rule("min_mean_word_length").check, quality_rule("max_mean_word_length").check
    assert short("abc " * 50 + "...") is None  # 3.0; symbols do not count
    assert short("abc " * 49 + "ab") == Drop("short_words", (49 * 3 + 2) / 50)
    assert long_("abcdefghij " * 50) is None  # 10.0
    assert long_("abcdefghij " * 49 + "abcdefghijk") == Drop("long_words", (49 * 10 + 11) / 50)


@pytest.mark.parametrize(
    ("symbol", "field", "reason"),
    [("#", "max_hash_ratio", "hash_ratio"), ("...", "max_ellipsis_ratio", "ellipsis_ratio")],
)
def test_symbol_to_word_ratios(symbol, field, reason):
    check = quality_rule(field).check
    words = " ".join(distinct_words(90))
    assert check(words + f" {symbol}" * 10) is None  # 10 per 100 words
    assert check(words + f" {symbol}" * 11) == Drop(reason, 11 / 101)


def test_bullet_lines():
    check = quality_rule("max_bullet_lines").check
    item = " ".join(distinct_words(5))
    assert check("\n".join(["intro line"] + [f"  - {item}"] * 5 + [f"• {item}"] * 4)) is None  # 9 of 10
    assert check("\n".join([f"- {item}"] * 10)) == Drop("bullet_lines", 1.0)


def test_lines_ending_in_an_ellipsis():
    check = quality_rule("max_ellipsis_lines").check
    line = " ".join(distinct_words(5))
    assert check("\n".join([line + "..."] * 2 + [line + "…"] + [line] * 7)) is None  # 3 of 10
    assert check("\n".join([line + "...  "] * 4 + [line] * 6)) == Drop("ellipsis_lines", 0.4)


def test_share_of_words_with_a_letter():
    check = quality_rule("min_alpha_words").check
    assert check(" ".join(distinct_words(80) + ["42"] * 20)) is None  # 0.8
    assert check(" ".join(distinct_words(79) + ["42"] * 20 + ["!"])) == Drop("alpha_words", 0.79)


def test_stop_words_are_distinct_and_case_sensitive():
    check = quality_rule("min_stop_words").check
    words = " ".join(distinct_words(20))
    assert check(f"{words} the {words} and") is None
    assert check(f"the {words} the The AND") == Drop("stop_words", 1)


def reference_top_ngram_chars(words: list[str], n: int) -> int:
    ngrams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    top, count = max(Counter(ngrams).items(), key=lambda item: item[1])  # first-seen wins ties
    return len(top) * count


def reference_duplicate_ngram_chars(words: list[str], n: int) -> int:
    seen, total, i = set(), 0, 0
    while i < len(words) - n + 1:
        ngram = tuple(words[i : i + n])
        if ngram in seen:
            total += sum(map(len, ngram))
            i += n
        else:
            seen.add(ngram)
            i += 1
    return total


@pytest.mark.parametrize("seed", range(40))
def test_ngram_counts_match_the_string_definitions_and_bounds_hold(seed):
    rng = random.Random(seed)
    vocabulary = ["a", "bb", "ccc", "the", "of", "word", "x"][: rng.randint(2, 7)]
    words = [rng.choice(vocabulary) for _ in range(rng.randint(10, 120))]
    ngrams = NGrams(words)
    for n in range(2, 11):
        if n > len(words):
            continue
        assert ngrams.top_ngram_chars_bound(n) >= reference_top_ngram_chars(words, n)
        assert ngrams.duplicate_ngram_chars_bound(n) >= reference_duplicate_ngram_chars(words, n)
        assert ngrams.top_ngram_chars(n) == reference_top_ngram_chars(words, n)
        assert ngrams.duplicate_ngram_chars(n) == reference_duplicate_ngram_chars(words, n)
