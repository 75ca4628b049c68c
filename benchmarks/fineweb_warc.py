"""WARC files for the end-to-end FineWeb benchmark, packed from the real text and pages of
``../shared/corpus``.

How they are made (seeded: the same count and seed give the same files):

- the 181 real HTML pages of the article-extraction benchmark, each as it is, once;
- the rest are pages around documents of ``dedup_corpus.generate``: real sentences and speeches
  (English web text, literature, and the Leipzig sentences of other languages) with about 30% planted
  near-copies (case and spacing, boilerplate, 0-3% or 10-30% of the words edited). Each document's
  paragraphs become the ``<p>`` of an ``<article>``, between one of a few site templates' navigation
  and footer, so that extraction has boilerplate to remove.

Every record is a gzip-compressed WARC ``response`` with an HTTP header, a unique
``WARC-Target-URI`` (the key the benchmark compares decisions by) and
``WARC-Identified-Payload-Type: text/html``, as Common Crawl writes it; a ``warcinfo`` record opens
each file and names the dump.
"""

from __future__ import annotations

import gzip
import html
import io
import random
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from benchmarks.dedup_corpus import BOILERPLATE, generate
from pipeline.corpus import corpus_path

DUMP = "CC-MAIN-2024-10"
SITES = [
    ("news", "The Morning Ledger"),
    ("blog", "Notes from the Field"),
    ("shop", "Gadget Corner"),
    ("forum", "Community Boards"),
    ("wiki", "Open Reference"),
]


def real_pages() -> list[tuple[str, bytes]]:
    """(name, raw HTML bytes) of the article-extraction benchmark's pages."""
    folder = corpus_path("web", "html", "article-extraction-benchmark", "html")
    return [(path.name.removesuffix(".html.gz"), gzip.decompress(path.read_bytes()))
            for path in sorted(folder.glob("*.html.gz"))]


def render(text: str, number: int, rng: random.Random) -> tuple[str, bytes]:
    """A page holding ``text`` as its article: (url, HTML bytes)."""
    slug, site = rng.choice(SITES)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    title = " ".join(paragraphs[0].split()[:8]) if paragraphs else "Untitled"
    nav = " | ".join(rng.sample(["Home", "News", "Sport", "Business", "Culture", "Contact", "About"], 5))
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    footer = html.escape(rng.choice(BOILERPLATE))
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)} - {site}</title></head>"
            f"<body><header><nav>{nav}</nav><div class=\"brand\">{site}</div></header>"
            f"<main><article><h1>{html.escape(title)}</h1>\n{body}\n</article>"
            f"<aside><h3>Related</h3><ul><li>More from {site}</li><li>Most read</li></ul></aside></main>"
            f"<footer><p>{footer}</p></footer></body></html>")
    return f"https://{slug}{number % 997}.example.org/{number}/{slug}-page.html", page.encode()


def records(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` (url, HTML) pairs: the real pages first, then generated ones."""
    pages = [(f"https://articles.example.net/{name}", raw) for name, raw in real_pages()][:count]
    corpus = generate(count - len(pages), seed=seed)
    rng = random.Random(seed)
    pages += [render(text, number, rng) for number, text in enumerate(corpus.table["text"].to_pylist())]
    return pages


def write_warcs(folder: Path, count: int, files: int, seed: int = 0) -> tuple[list[Path], list[str]]:
    """``count`` records spread round-robin over ``files`` WARC files in ``folder``: the files, and
    the records' urls."""
    folder.mkdir(parents=True, exist_ok=True)
    streams = [io.BytesIO() for _ in range(files)]
    writers = [WARCWriter(stream, gzip=True) for stream in streams]
    for number, writer in enumerate(writers):
        writer.write_record(writer.create_warcinfo_record(
            f"bench-{number:03d}.warc.gz", {"isPartOf": DUMP, "software": "benchmarks/fineweb_warc.py"}))
    pages = records(count, seed)
    for number, (url, page) in enumerate(pages):
        writer = writers[number % files]
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                           ("Content-Length", str(len(page)))], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(
            url, "response", payload=io.BytesIO(page), http_headers=http,
            warc_headers_dict={"WARC-Identified-Payload-Type": "text/html"}))
    paths = []
    for number, stream in enumerate(streams):
        path = folder / f"bench-{number:03d}.warc.gz"
        path.write_bytes(stream.getvalue())
        paths.append(path)
    return paths, [url for url, _ in pages]
