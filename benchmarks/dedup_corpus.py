"""A labelled near-duplicate corpus built from the real text in ``../shared/corpus``.

How it is made:

1. A pool of real text units: the sentences of the 181 article bodies of the
   article-extraction benchmark, of the Common Crawl WET sample and of the cc_net JSONL sample
   ("the web pages"); the speeches of Tiny Shakespeare and the sentences of Alice and The Verdict
   ("the texts"); and the Leipzig sentences of every language that separates words with spaces
   ("the sentences"). About 110,000 units.
2. An *original* document is 8-24 units of one group (English web, literature, or one other
   language), so originals share next to no word 5-grams with each other.
3. A share of the documents are *copies* of an original, each made with one controlled edit:

   | kind         | share | edit                                               | word 5-gram Jaccard |
   |--------------|-------|----------------------------------------------------|---------------------|
   | exact        | 10%   | case and whitespace changed only                    | 1.0 after normalizing |
   | boilerplate  | 30%   | a navigation header and/or footer added or swapped  | about 0.85-0.97     |
   | light        | 35%   | up to 1.5% of the words inserted/deleted/swapped/replaced | about 0.85-1.0 |
   | medium       | 15%   | 1.5-3% of the words edited                          | about 0.7-0.87      |
   | heavy        | 10%   | 10-30% of the words edited: a *different* document  | below 0.5           |

   A copied original gets 1, 2 or 3 copies (60/30/10%), each made from the original.

Web near-duplicates are mostly templated variants (the first four kinds); the heavy kind are hard
negatives that a dedup should keep. Everything is seeded: a size and seed give the same corpus.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa

from pipeline.corpus import corpus_path
from pipeline.documents import stable_id, table_from_rows
from pipeline.readers import ReadConfig, read_file

COPY_KINDS = {"exact": 0.10, "boilerplate": 0.30, "light": 0.35, "medium": 0.15, "heavy": 0.10}
EDIT_RATES = {"light": (0.0, 0.015), "medium": (0.015, 0.03), "heavy": (0.10, 0.30)}
BOILERPLATE = [
    "Home | News | Sport | Business | Culture | Contact us",
    "Skip to main content. Menu. Search. Sign in or register.",
    "Share this article: Facebook Twitter LinkedIn WhatsApp Email Print",
    "Subscribe to our newsletter and get the latest stories in your inbox every morning.",
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Copyright 2020 The Daily Herald Media Group. All rights reserved.",
    "Related articles: More from this section, most read, editor's picks.",
    "Advertisement. Continue reading below the advertisement.",
    "Posted in Uncategorized | Leave a comment | Permalink",
    "Follow us on social media for updates, photos and behind the scenes stories.",
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Leipzig languages whose words are not separated by spaces: a "word" there is a whole sentence.
_NO_SPACES = {"ja", "zh", "th", "my", "km", "lo"}


@dataclass
class Corpus:
    table: pa.Table
    # Family of each document: the original's id, and the kind of copy ("original" for it).
    family: dict[str, str] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)

    def families(self) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for doc_id, original in self.family.items():
            members.setdefault(original, []).append(doc_id)
        return members


@cache
def text_pool() -> dict[str, list[str]]:
    """Real text units by group; see the module docstring."""
    web: list[str] = []
    truth = json.loads(corpus_path("web", "html", "article-extraction-benchmark", "ground-truth.json").read_text())
    for page in truth.values():
        web += _sentences(page.get("articleBody") or "")
    for path in (corpus_path("web", "wet", "cc-main-2016-50-sample.warc.wet.gz"),
                 corpus_path("web", "jsonl", "ccnet-en-head-0091.jsonl.gz")):
        for doc in read_file(str(path), ReadConfig()):
            web += _sentences(doc.get("text") or "")
    web += _lines(corpus_path("lang", "sentences", "en.txt"))

    literature = [
        " ".join(speech.split("\n")[1:])
        for speech in corpus_path("text", "tinyshakespeare.txt").read_text().split("\n\n")
        if speech.count("\n") >= 1
    ]
    for name in ("gutenberg-11-alice.txt", "the-verdict.txt"):
        literature += _sentences(corpus_path("text", name).read_text())

    groups = {"web": _usable(web), "literature": _usable(literature)}
    for path in sorted(corpus_path("lang", "sentences").glob("*.txt")):
        if path.stem not in _NO_SPACES and path.stem != "en":
            groups[f"lang-{path.stem}"] = _usable(_lines(path))
    return groups


def generate(n_docs: int, seed: int = 0, copy_share: float = 0.3) -> Corpus:
    """``n_docs`` documents of which about ``copy_share`` are copies of originals."""
    rng = random.Random(seed)
    pool = text_pool()
    names = sorted(pool)
    # English web text is most of a web crawl; the other groups share the rest by size.
    weights = [6.0 * sum(map(len, pool["web"])) if name == "web" else sum(map(len, pool[name])) for name in names]
    kinds, kind_weights = list(COPY_KINDS), list(COPY_KINDS.values())
    # An original gets 1, 2 or 3 copies (1.5 on average) with this probability.
    copied_share = copy_share / (1.5 * (1 - copy_share))

    corpus = Corpus(table=pa.table({}))
    rows: list[dict] = []

    def add(text: str, original: str | None, kind: str) -> str:
        doc_id = stable_id("dedup-bench", f"{seed}/{len(rows)}")
        rows.append({"id": doc_id, "url": f"https://bench.example/{len(rows)}", "source": "bench", "text": text})
        corpus.family[doc_id] = original or doc_id
        corpus.kind[doc_id] = kind
        return doc_id

    while len(rows) < n_docs:
        group = pool[rng.choices(names, weights)[0]]
        text = _join_units(rng.sample(group, min(len(group), rng.randint(8, 24))), rng)
        original = add(text, None, "original")
        copies = rng.choices((1, 2, 3), (0.6, 0.3, 0.1))[0] if rng.random() < copied_share else 0
        for _ in range(min(copies, n_docs - len(rows))):
            kind = rng.choices(kinds, kind_weights)[0]
            add(make_copy(text, kind, rng), original, kind)
    corpus.table = table_from_rows(rows)
    return corpus


def make_copy(text: str, kind: str, rng: random.Random) -> str:
    if kind == "exact":
        return "  ".join(text.upper().split(" ")) if rng.random() < 0.5 else text.lower()
    if kind == "boilerplate":
        header = rng.choice(BOILERPLATE) if rng.random() < 0.7 else ""
        footer = rng.choice(BOILERPLATE) if rng.random() < 0.7 or not header else ""
        return "\n".join(part for part in (header, _edit_words(text, 0.002, rng), footer) if part)
    return _edit_words(text, rng.uniform(*EDIT_RATES[kind]), rng)


def _edit_words(text: str, rate: float, rng: random.Random) -> str:
    """Edit ``rate`` of the words: each edit inserts, deletes, swaps two neighbours or replaces."""
    words = text.split(" ")
    vocabulary = words[:]
    for _ in range(round(rate * len(words))):
        at = rng.randrange(len(words))
        operation = rng.randrange(4)
        if operation == 0:
            words.insert(at, rng.choice(vocabulary))
        elif operation == 1 and len(words) > 1:
            del words[at]
        elif operation == 2 and at + 1 < len(words):
            words[at], words[at + 1] = words[at + 1], words[at]
        else:
            words[at] = rng.choice(vocabulary)
    return " ".join(words)


def _join_units(units: list[str], rng: random.Random) -> str:
    """Units as paragraphs of 1-4 units."""
    paragraphs, i = [], 0
    while i < len(units):
        size = rng.randint(1, 4)
        paragraphs.append(" ".join(units[i : i + size]))
        i += size
    return "\n\n".join(paragraphs)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _usable(units: list[str]) -> list[str]:
    """Units of at least 6 words, each once."""
    return sorted({u for u in units if len(u.split()) >= 6})
