"""FineWeb's quality rules, each alone at its FineWeb threshold, just inside and just outside."""

from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.stage import Drop

# Settings under which no rule can fire; each test turns one rule back to its default.
OFF = {
    "min_line_punct_ratio": 0.0,
    "max_short_line_ratio": 1.0,
    "max_duplicate_line_chars": 1.0,
    "max_newline_ratio": 1e9,
}


def rule(field: str) -> FineWebQualityFilter:
    options = {**OFF, field: getattr(FineWebQualityConfig(), field)}
    return FineWebQualityFilter(FineWebQualityConfig(**options))


def lines(count: int, end: str = "") -> list[str]:
    return [f"line number {i} of this document has words{end}" for i in range(count)]


def test_defaults_are_finewebs():
    c = FineWebQualityConfig()
    assert (c.min_line_punct_ratio, c.max_short_line_ratio, c.short_line_length) == (0.12, 0.67, 30)
    assert (c.max_duplicate_line_chars, c.max_newline_ratio) == (0.01, 0.3)


def test_share_of_lines_ending_in_punctuation():
    check = rule("min_line_punct_ratio").check
    assert check("\n".join(lines(3, ".") + lines(22))) is None  # 3 of 25 = 0.12
    assert check("\n".join(lines(2, "。") + lines(23))) == Drop("line_punct", 0.08)
    # A line is taken as it is: a full stop followed by spaces is not an ending.
    assert check("\n".join(lines(3, ".  ") + lines(22))) == Drop("line_punct", 0.0)


def test_no_punctuation_at_all_can_be_excused():
    options = {**OFF, "min_line_punct_ratio": 0.12, "line_punct_exclude_zero": True}
    assert FineWebQualityFilter(FineWebQualityConfig(**options)).check("\n".join(lines(25))) is None


def test_share_of_short_lines():
    check = rule("max_short_line_ratio").check
    short, long_ = "x" * 30, "y" * 31  # "short" means at most 30 characters
    assert check("\n".join([short] * 67 + [long_] * 33)) is None
    assert check("\n".join([short] * 68 + [long_] * 32)) == Drop("short_lines", 0.68)


def test_share_of_characters_in_duplicated_lines():
    check = rule("max_duplicate_line_chars").check
    repeated = "r" * 10

    def text(other_chars):  # newlines are not counted
        return "\n".join([repeated, repeated, "o" * other_chars])

    assert check(text(980)) is None  # 10 of 1000 characters = 0.01
    assert check(text(979)) == Drop("duplicate_line_chars", 10 / 999)
    assert check("\n".join([repeated, "", "  ", "o" * 990])) is None  # blank lines are not lines


def test_newlines_per_word():
    check = rule("max_newline_ratio").check
    assert check("one two three four five\nsix seven\neight\nnine ten") is None  # 3 per 10 words
    assert check("one two three four\nfive six\nseven\neight\nnine ten") == Drop("newline_ratio", 0.4)


def test_blank_documents_are_dropped():
    assert FineWebQualityFilter().check(" \n\t\n") == Drop("empty")
