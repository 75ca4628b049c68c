"""Drops documents by their URL: FineWeb's URL filter, plus host blocklists with subdomains.

In the order checked, each with its drop reason (the URL in the audit output says what matched):

- ``domain`` / ``subdomain``: the host is listed, or a domain above it is. Hosts are compared
  normalized: lower-cased, without a port, a trailing dot or a leading ``www.``, and in IDNA 2008
  ASCII form (``straße.de`` is ``xn--strae-oqa.de``, not IDNA 2003's ``strasse.de``), so
  ``https://WWW.Bücher.de:443/x`` and a list entry ``xn--bcher-kva.de`` match. ``example.com``
  blocks ``example.com`` and ``cdn.a.example.com``, not ``badexample.com``.
- ``url``: the whole URL is listed.
- ``banned_word``: one of the URL's words is banned. Words are the runs of ASCII letters and
  digits, lower-cased: ``https://x.com/free-PORN`` has the words ``https x com free porn``.
- ``soft_banned_words``: at least ``soft_banned_threshold`` (FineWeb: 2) soft-banned words.
- ``banned_subword``: a banned subword occurs in the URL with everything but letters and digits
  removed (``p-o-r-n`` is ``porn``).
- ``url_substring``: a listed fragment occurs in the URL, case-insensitively.

Lists are files with one entry per line; blank lines and lines starting with ``#`` are skipped.
The default is no list at all: see the README for FineWeb's word lists and the UT1 blocklists.
Subwords and fragments are found with Aho-Corasick automata (``pyahocorasick``): one pass over a
URL for any number of entries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import field
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import ahocorasick
import idna
import numpy as np
import pyarrow as pa
from pydantic import Field
from xxhash import xxh64_intdigest

from pipeline.config import config_dataclass
from pipeline.documents import alive_rows, with_drops
from pipeline.stage import Drop, Stage

NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


@config_dataclass
class URLFilterConfig:
    domain_blocklist_files: list[str] = field(default_factory=list)
    url_blocklist_files: list[str] = field(default_factory=list)
    banned_words_files: list[str] = field(default_factory=list)
    soft_banned_words_files: list[str] = field(default_factory=list)
    soft_banned_threshold: Annotated[int, Field(ge=1)] = 2
    banned_subwords_files: list[str] = field(default_factory=list)
    url_substring_blocklist_files: list[str] = field(default_factory=list)


def normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".").removeprefix("www.")
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:  # not a valid IDNA name (an empty label, a 64-character label): keep it as is
        return host


def url_host(url: str) -> str:
    """The normalized host of a URL; a bare ``host/path`` without a scheme works too."""
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:  # e.g. an unbalanced "[" in the host
        return ""
    return normalize_host(host or "")


def list_host(entry: str) -> str:
    """A blocklist entry's host: entries are bare hosts, but ``host:port`` and URLs work too."""
    return url_host(entry) if "/" in entry or ":" in entry else normalize_host(entry)


def read_list(path: str) -> Iterator[str]:
    with open(Path(path), encoding="utf-8") as lines:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield entry


class HostSet:
    """A set of hosts kept as sorted 64-bit hashes: UT1's 4.6 million adult domains take 37 MB per
    actor instead of about a gigabyte as Python strings. A false match needs a 64-bit collision
    (odds about 1e-13 per lookup)."""

    def __init__(self, hosts: Iterable[str]):
        hashes = np.sort(np.fromiter((xxh64_intdigest(h.encode()) for h in hosts if h), dtype=np.uint64))
        self.hashes = hashes[np.insert(hashes[1:] != hashes[:-1], 0, True)] if len(hashes) else hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, hosts: list[str]) -> np.ndarray:
        """Whether each host is in the set, for many hosts at once."""
        keys = np.fromiter((xxh64_intdigest(h.encode()) for h in hosts), dtype=np.uint64, count=len(hosts))
        at = np.minimum(np.searchsorted(self.hashes, keys), len(self.hashes) - 1)
        return self.hashes[at] == keys if len(self.hashes) else np.zeros(len(hosts), dtype=bool)


def url_words(url: str) -> set[str]:
    return set(NOT_ALPHANUMERIC.split(url.lower()))


class SubstringMatcher:
    """Whether a text contains any of many fragments (UT1's adult URL list has ~20,000)."""

    def __init__(self, fragments: Iterable[str]):
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
        for fragment in fragments:
            self.automaton.add_word(fragment)
        self.automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.automaton)

    def search(self, text: str) -> bool:
        return len(self.automaton) > 0 and next(self.automaton.iter(text), None) is not None


class URLFilter(Stage):
    name = "url_filter"

    def __init__(self, config: URLFilterConfig | None = None):
        super().__init__()
        self.config = config or URLFilterConfig()

        def entries(paths: list[str]) -> Iterator[str]:
            return (entry for path in paths for entry in read_list(path))

        self.domains = HostSet(list_host(entry) for entry in entries(self.config.domain_blocklist_files))
        self.urls = set(entries(self.config.url_blocklist_files))
        self.banned_words = {_alphanumeric(e) for e in entries(self.config.banned_words_files)} - {""}
        self.soft_banned_words = {_alphanumeric(e) for e in entries(self.config.soft_banned_words_files)} - {""}
        self.banned_subwords = SubstringMatcher(
            {_alphanumeric(e) for e in entries(self.config.banned_subwords_files)} - {""}
        )
        self.fragments = SubstringMatcher({e.lower() for e in entries(self.config.url_substring_blocklist_files)})

    @property
    def active(self) -> bool:
        return bool(
            self.domains or self.urls or self.banned_words or self.soft_banned_words
            or len(self.banned_subwords) or len(self.fragments)
        )

    def check(self, urls: list[str]) -> list[Drop | None]:
        """Each URL's drop, or None; the hosts of the whole batch are looked up in one go."""
        drops: list[Drop | None] = [None] * len(urls)
        if self.domains:
            names, owners, is_host = [], [], []
            for i, url in enumerate(urls):
                labels = url_host(url).split(".")
                for j in range(len(labels)):  # the host, then each domain above it
                    names.append(".".join(labels[j:]))
                    owners.append(i)
                    is_host.append(j == 0)
            for found, i, host in zip(self.domains.contains(names).tolist(), owners, is_host):
                if found and (drops[i] is None or host):
                    drops[i] = Drop("domain" if host else "subdomain")
        for i, url in enumerate(urls):
            if drops[i] is None:
                drops[i] = self.check_text(url)
        return drops

    def check_text(self, url: str) -> Drop | None:
        """The checks on the URL's text, FineWeb's order."""
        if url in self.urls:
            return Drop("url")
        if self.banned_words or self.soft_banned_words:
            words = url_words(url)
            if not words.isdisjoint(self.banned_words):
                return Drop("banned_word")
            soft = len(words & self.soft_banned_words)
            if soft >= self.config.soft_banned_threshold:
                return Drop("soft_banned_words", soft)
        if self.banned_subwords.search(_alphanumeric(url)):
            return Drop("banned_subword")
        if self.fragments.search(url.lower()):
            return Drop("url_substring")
        return None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self.active:
            return batch
        alive = list(alive_rows(batch, "url"))
        rows = [(i, url) for i, url in alive if url]
        self.stats["no_url"] += len(alive) - len(rows)
        reasons: list[str | None] = [None] * len(batch)
        values: list[float | None] = [None] * len(batch)
        for (i, _), drop in zip(rows, self.check([url for _, url in rows])):
            if drop is not None:
                reasons[i], values[i] = f"{self.name}:{drop.reason}", drop.value
        return with_drops(batch, reasons, values)


def _alphanumeric(text: str) -> str:
    """Lower-cased, with everything but ASCII letters and digits removed (FineWeb's normalization)."""
    return NOT_ALPHANUMERIC.sub("", text.lower())
