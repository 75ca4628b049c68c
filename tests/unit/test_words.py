"""Word and sentence splitting: each rule of pipeline/filters/words.py, with spaCy's English output
(what datatrove's filters see) as the expected value."""

import pytest

from pipeline.filters.words import TERMINAL_PUNCTUATION, clear_cache, count_sentences, split_words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # whitespace of any kind separates; it is never a word
        ("a\u00a0b\tc\n\nd  e", ["a", "b", "c", "d", "e"]),
        # prefixes and suffixes come off repeatedly
        ('"(Hello)," she said:', ['"', "(", "Hello", ")", ",", '"', "she", "said", ":"]),
        ("ok?!", ["ok", "?", "!"]),
        ("$100 £10 US$5 50%", ["$", "100", "£", "10", "US$", "5", "50", "%"]),
        ("10km 5kg 3.5bn", ["10", "km", "5", "kg", "3.5bn"]),
        # "." is a suffix after a lower-case letter, a digit or two capitals, not after one capital
        ("end. 2019. ABC. John F. aB.", ["end", ".", "2019", ".", "ABC", ".", "John", "F.", "aB."]),
        ("word... ok…", ["word", "...", "ok", "…"]),
        ("John's cafe’s students'", ["John", "'s", "cafe", "’s", "students", "'"]),
        # exceptions: abbreviations and contractions
        ("Dr. Smith, e.g. U.S. Calif. (Minn.)", ["Dr.", "Smith", ",", "e.g.", "U.S.", "Calif.", "(", "Minn.", ")"]),
        ("don't can’t I'm cannot gonna", ["do", "n't", "ca", "n’t", "I", "'m", "can", "not", "gon", "na"]),
        ("dont its well", ["do", "nt", "its", "well"]),  # bare forms, except the listed real words
        ("5pm 11a.m.", ["5", "pm", "11", "a.m."]),
        (":) <3 C++ and/or", [":)", "<3", "C++", "and/or"]),
        # pieces of an exception that meet again inside a chunk are re-joined
        ("(D-Minn.), (1-0):", ["(", "D", "-", "Minn.", ")", ",", "(", "1", "-", "0", "):"]),
        # URLs and e-mail addresses stay whole
        (
            "https://t.co/a-b. user@mail.example.com www.bbc.co.uk",
            ["https://t.co/a-b", ".", "user@mail.example.com", "www.bbc.co.uk"],
        ),
        # infixes: hyphens, "/" ":" between letters, "," between letters, ".", between lower and upper
        ("well-known 16-inch 5-10 high-5", ["well", "-", "known", "16", "-", "inch", "5", "-", "10", "high-5"]),
        (
            "a/b 1/2 $4.99/mo A:B a,b 1,000",
            ["a", "/", "b", "1/2", "$", "4.99", "/", "mo", "A", ":", "B", "a", ",", "b", "1,000"],
        ),
        ("end.The foo.bar a--b", ["end", ".", "The", "foo.bar", "a", "--", "b"]),
    ],
)
def test_split_words_follows_spacy_english(text, expected):
    assert split_words(text) == expected


def test_split_words_is_the_same_with_a_cold_or_warm_cache():
    text = "The U.S. economy grew 2.1% in Q3 (well-known fact), didn't it?"
    clear_cache()
    cold = split_words(text)
    assert split_words(text) == cold


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", 0),
        ("One sentence without an end", 1),
        ("One. Two! Three? Four.", 4),
        ('He said "Stop." Then he left.', 2),  # closing quotes belong to the sentence before
        ("Mr. Smith met Dr. Jones on Jan. 5.", 1),  # abbreviations end no sentence
        ("Wait... what", 1),  # an ellipsis is not a sentence terminal
        ("Yes!!! No.", 2),
    ],
)
def test_count_sentences_is_spacys_sentencizer(text, sentences):
    assert count_sentences(text) == sentences


def test_count_sentences_stops_at_the_limit():
    text = "One. Two. Three. Four. Five."
    assert count_sentences(text) == 5
    assert count_sentences(text, stop_at=3) == 3


def test_terminal_punctuation_covers_other_scripts():
    assert {".", "!", "?", "。", "！", "؟", "।"} <= TERMINAL_PUNCTUATION
    assert not {",", ";", ":", '"', "…"} & TERMINAL_PUNCTUATION
