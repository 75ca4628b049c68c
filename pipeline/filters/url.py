"""Drops documents whose URL is on a blocklist: by host (with all its subdomains) or by URL fragment.

Hosts are compared normalized: lower-cased, without a port, a trailing dot or a leading ``www.``,
and in IDNA ASCII form, so ``https://WWW.Bücher.de:443/x`` and a list entry ``xn--bcher-kva.de``
match. A listed host blocks itself (reason ``domain``) and every host under it (``subdomain``):
``example.com`` blocks ``example.com`` and ``cdn.a.example.com``, not ``badexample.com``. A URL
fragment blocks every URL that contains it, case-insensitively (``url_substring``). The drop value
is null; the URL in the audit output says what matched.

Lists are files with one entry per line; blank lines and lines starting with ``#`` are skipped.
The default is no list at all: see the README for plugging in the UT1 blocklists FineWeb uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from xxhash import xxh64_intdigest

from pipeline.config import config_dataclass
from pipeline.documents import alive_mask, with_drops
from pipeline.stage import Drop, Stage


@config_dataclass
class URLFilterConfig:
    domain_blocklist_files: list[str] = field(default_factory=list)
    url_substring_blocklist_files: list[str] = field(default_factory=list)


def normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".").removeprefix("www.")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDNA name (an empty label, a 64-character label): keep it as is
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


class FragmentMatcher:
    """Finds whether a text contains any of many fragments (UT1's adult list has ~20,000).

    Each fragment is filed under its first ``k`` characters (``k``: the shortest fragment's length,
    at most 8); the text's ``k``-character windows are intersected with those keys, and only a
    window that matches is checked further. A regex alternation of 20,000 fragments would try every
    fragment at every position instead.
    """

    def __init__(self, fragments: set[str]):
        self.k = min(8, min(map(len, fragments)))
        self.by_prefix: dict[str, list[str]] = {}
        for fragment in sorted(fragments):
            self.by_prefix.setdefault(fragment[: self.k], []).append(fragment)

    def search(self, text: str) -> bool:
        k = self.k
        windows = {text[i : i + k] for i in range(len(text) - k + 1)}
        for prefix in windows.intersection(self.by_prefix):  # usually none at all
            at = text.find(prefix)
            while at != -1:
                if any(text.startswith(fragment, at) for fragment in self.by_prefix[prefix]):
                    return True
                at = text.find(prefix, at + 1)
        return False


class URLFilter(Stage):
    name = "url_filter"

    def __init__(self, config: URLFilterConfig | None = None):
        super().__init__()
        self.config = config or URLFilterConfig()
        self.domains = HostSet(
            list_host(entry) for path in self.config.domain_blocklist_files for entry in read_list(path)
        )
        fragments = {entry.lower() for path in self.config.url_substring_blocklist_files for entry in read_list(path)}
        self.fragments = FragmentMatcher(fragments) if fragments else None

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
        if self.fragments is not None:
            for i, url in enumerate(urls):
                if drops[i] is None and self.fragments.search(url.lower()):
                    drops[i] = Drop("url_substring")
        return drops

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self.domains and self.fragments is None:
            return batch
        alive = alive_mask(batch).to_pylist()
        rows = [(i, url) for i, (keep, url) in enumerate(zip(alive, batch["url"].to_pylist())) if keep and url]
        self.stats["no_url"] += sum(alive) - len(rows)
        reasons: list[str | None] = [None] * len(batch)
        for (i, _), drop in zip(rows, self.check([url for _, url in rows])):
            if drop is not None:
                reasons[i] = f"{self.name}:{drop.reason}"
        return with_drops(batch, reasons, [None] * len(batch))
