"""C4 line removal and document drops, each rule on its own threshold edge."""

import pytest

from pipeline.filters.c4 import C4QualityConfig, C4QualityFilter
from pipeline.stage import Drop

# Five sentences on five lines: the smallest document the default C4 rules keep as it is.
PROSE = [
    "The river rose slowly through the night.",
    "By morning the lower road was under water.",
    "Farmers moved their animals to higher ground.",
    "Nobody in the village could remember a worse flood.",
    "The school stayed closed for a whole week.",
]


def c4(**options) -> C4QualityFilter:
    return C4QualityFilter(C4QualityConfig(**options))


def test_clean_prose_is_kept_as_is():
    assert c4().transform("\n".join(PROSE)) == "\n".join(PROSE)


def test_lines_are_stripped_and_blank_lines_dropped():
    assert c4().transform("\n\n  " + "\n\n".join(PROSE) + "  \n") == "\n".join(PROSE)


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("It ended with a full stop.", True),
        ("Did it end with a question?", True),
        ('It ended with a quote."', True),
        ("It ended with nothing", False),
        ("It ended with an ellipsis...", False),
        ("It ended with a colon:", False),
    ],
)
def test_lines_without_terminal_punctuation_are_removed(line, kept):
    filter_ = c4()
    assert (line in filter_.transform("\n".join(PROSE + [line])).split("\n")) is kept
    assert filter_.take_stats().get("lines_removed:no_terminal_punct", 0) == (0 if kept else 1)


def test_the_terminal_punctuation_rule_can_be_switched_off():
    text = "\n".join(PROSE + ["Menu Home About us"])
    assert c4(filter_no_terminal_punct=False).transform(text) == text


def test_lines_need_three_words():
    filter_ = c4()
    assert filter_.transform("\n".join(PROSE + ["Three words here."])).endswith("Three words here.")
    assert filter_.transform("\n".join(PROSE + ["Two words."])) == "\n".join(PROSE)
    assert filter_.take_stats()["lines_removed:few_words"] == 1


def test_lines_with_a_word_over_1000_characters_are_removed():
    filter_ = c4()
    ok, too_long = "x" * 1000, "x" * 1001
    assert filter_.transform("\n".join(PROSE + [f"A long {ok} word."])).endswith(f"{ok} word.")
    assert filter_.transform("\n".join(PROSE + [f"A long {too_long} word."])) == "\n".join(PROSE)
    assert filter_.take_stats()["lines_removed:long_word"] == 1


@pytest.mark.parametrize(
    ("line", "counter"),
    [
        ("Please enable JavaScript to watch this video.", "lines_removed:javascript"),
        ("Read our Privacy Policy before you continue.", "lines_removed:policy"),
        ("This site uses cookies to improve your visit.", "lines_removed:policy"),
    ],
)
def test_boilerplate_lines_are_removed(line, counter):
    filter_ = c4()
    assert filter_.transform("\n".join(PROSE + [line])) == "\n".join(PROSE)
    assert filter_.take_stats()[counter] == 1


def test_citation_markers_are_cut():
    filter_ = c4()
    text = filter_.transform("\n".join(PROSE + ["The flood was the worst on record.[1][edit][citation needed]"]))
    assert text.endswith("The flood was the worst on record.")
    assert filter_.take_stats()["citations_removed"] == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Lorem ipsum dolor sit amet, consectetur.", "lorem_ipsum"),
        ("The function returns {a: 1} when called.", "curly_bracket"),
    ],
)
def test_lorem_ipsum_and_curly_brackets_drop_the_document(line, reason):
    assert c4().transform("\n".join(PROSE + [line])) == Drop(reason)


def test_only_lines_that_reach_a_document_rule_can_trigger_it():
    # A curly bracket in a line already removed (too few words; mentions javascript) is harmless.
    text = "\n".join(PROSE + ["{x}.", "The javascript code {x} runs here."])
    assert c4().transform(text) == "\n".join(PROSE)


def test_documents_need_five_sentences():
    assert c4().transform("\n".join(PROSE[:4])) == Drop("too_few_sentences", 4)
    # Sentences are counted within lines, spaCy's way: "Dr." and "a.m." end none.
    assert c4().transform("Dr. Smith left at 9 a.m. sharp. He came back. It rained. We waited.") == Drop(
        "too_few_sentences", 4
    )
    five = "One short one. Two short ones. Three. Four is here. Five ends it."
    assert c4().transform(five) == five
    assert c4(min_sentences=None).transform(PROSE[0]) == PROSE[0]


def test_removed_lines_are_counted_only_for_kept_documents():
    filter_ = c4()
    filter_.transform("\n".join(PROSE[:2] + ["no punctuation here"]))  # dropped: too few sentences
    assert filter_.take_stats() == {}
