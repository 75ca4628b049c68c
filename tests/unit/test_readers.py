"""Readers: every record becomes one row, a document or a counted skip; bad input never raises."""

from __future__ import annotations

import gzip
import io
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.readers import ReadConfig, list_inputs, read_file, read_files


def warc_bytes(pages: list[tuple[str, bytes, str]], per_record_gzip: bool = True) -> bytes:
    """(url, body, content type) responses as a WARC, per-record gzip or plain."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=per_record_gzip)
    for url, body, content_type in pages:
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))
    return out.getvalue()


HTML = b"<html><body><p>A page with enough words to be a document.</p></body></html>"


def reasons(rows: list[dict]) -> Counter:
    return Counter(row.get("drop_reason") or "kept" for row in rows)


def read(path: Path, **options) -> list[dict]:
    return list(read_file(str(path), ReadConfig(**options)))


def test_per_record_and_whole_file_gzip_read_the_same(tmp_path):
    pages = [(f"https://example.com/{i}", HTML, "text/html") for i in range(3)]
    per_record = tmp_path / "a.warc.gz"
    per_record.write_bytes(warc_bytes(pages))
    whole_file = tmp_path / "b.warc.gz"
    whole_file.write_bytes(gzip.compress(warc_bytes(pages, per_record_gzip=False)))
    for path in (per_record, whole_file):
        rows = read(path)
        assert [row["url"] for row in rows] == [url for url, _, _ in pages]
        assert all(row["html"] == HTML.decode() for row in rows)


def test_ids_are_stable_and_distinct(tmp_path):
    path = tmp_path / "a.warc.gz"
    path.write_bytes(warc_bytes([(f"https://example.com/{i}", HTML, "text/html") for i in range(5)]))
    first, second = read(path), read(path)
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert len({r["id"] for r in first}) == 5


def test_truncated_gzip_keeps_what_was_read_and_counts_the_rest(tmp_path):
    rng = random.Random(0)
    pages = [
        (f"https://example.com/{i}", " ".join(f"w{rng.randrange(10**6)}" for _ in range(300)).encode(), "text/html")
        for i in range(20)
    ]
    data = gzip.compress(warc_bytes(pages, per_record_gzip=False))
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: int(len(data) * 0.7)])
    counts = reasons(read(path))
    assert counts["read:truncated_gzip"] == 1
    assert 5 <= counts["kept"] < 20


def test_charset_from_http_header_and_meta_and_undecodable(tmp_path):
    japanese = "日本語のページです。".encode("euc_jp")
    meta_page = b'<html><head><meta charset="shift_jis"></head><body>' + "こんにちは".encode("shift_jis") + b"</body></html>"
    path = tmp_path / "charsets.warc.gz"
    path.write_bytes(
        warc_bytes(
            [
                ("https://a.example/", b"<html><body>" + japanese + b"</body></html>", "text/html; charset=EUC-JP"),
                ("https://b.example/", meta_page, "text/html"),
                ("https://c.example/", b"<html>\x00\x01\x02\xff\xfe binary</html>", "text/html"),
            ]
        )
    )
    rows = read(path)
    assert "日本語のページです。" in rows[0]["html"]
    assert "こんにちは" in rows[1]["html"]
    assert rows[2]["drop_reason"] == "read:undecodable"


def test_empty_non_html_and_too_large_are_counted(tmp_path):
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(
        warc_bytes(
            [
                ("https://a.example/empty", b"   \n", "text/html"),
                ("https://a.example/logo.png", b"\x89PNG....", "image/png"),
                ("https://a.example/huge", b"<p>" + b"x" * 20_000_000 + b"</p>", "text/html"),
                ("https://a.example/ok", HTML, "text/html"),
            ]
        )
    )
    assert reasons(read(path)) == Counter(
        {"read:empty_payload": 1, "read:non_html_content_type": 1, "read:too_large": 1, "kept": 1}
    )


def test_malformed_header_is_counted_and_reading_resumes(tmp_path):
    good = warc_bytes([("https://a.example/1", HTML, "text/html")], per_record_gzip=False)
    garbage = b"NOT-A-WARC-HEADER\r\nfoo: bar\r\n\r\nsome bytes\r\n\r\n"
    path = tmp_path / "broken.warc"
    second = warc_bytes([("https://a.example/2", HTML, "text/html")], per_record_gzip=False)
    path.write_bytes(good + garbage + second)
    rows = read(path)
    assert reasons(rows)["read:malformed_header"] == 1
    assert {r["url"] for r in rows if r.get("drop_reason") is None} == {"https://a.example/1", "https://a.example/2"}


def test_bytes_that_are_no_record_are_counted_wherever_they_are(tmp_path):
    """Before the first record, between records, after the last one, and in a gzip member of their own."""
    page = lambda i: warc_bytes([(f"https://a.example/{i}", HTML, "text/html")], per_record_gzip=False)  # noqa: E731
    garbage = b"NOT-A-WARC-HEADER\r\nfoo: bar\r\n\r\nsome bytes\r\n\r\n"
    broken = b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:x>\r\nContent-Length: 1e9\r\n\r\nxyz"
    # A page whose body holds a line that looks like a record header: resuming must not land in it.
    quoting = warc_bytes([("https://a.example/q", b"<p>\nWARC/1.0\r\nWARC-Type: response\r\n\r\n</p>", "text/html")],
                         per_record_gzip=False)
    files = {
        "lead.warc": (garbage + page(1) + page(2), 1),
        "trail.warc": (page(1) + page(2) + garbage, 1),
        "between.warc": (quoting + garbage + page(1) + garbage + garbage + page(2), 2),
        "member.warc.gz": (gzip.compress(page(1)) + gzip.compress(garbage) + gzip.compress(page(2)), 1),
        "broken-first.warc": (broken + b"\r\n\r\n" + page(1) + page(2), 1),
    }
    for file_name, (data, malformed) in files.items():
        path = tmp_path / file_name
        path.write_bytes(data)
        rows = read(path)
        counts = reasons(rows)
        assert counts["read:malformed_header"] >= malformed, (file_name, counts)
        kept = {r["url"] for r in rows if r.get("drop_reason") is None}
        assert {"https://a.example/1", "https://a.example/2"} <= kept, (file_name, counts)
        assert len({r["id"] for r in rows}) == len(rows)
    assert "https://a.example/q" in {r["url"] for r in read(tmp_path / "between.warc")}


def test_http_encodings_are_undone_and_a_body_that_is_not_encoded_as_declared_is_read_as_stored(tmp_path):
    html = b"<html><body>A page with enough words to be a document.</body></html>"

    def response(body: bytes, *headers: tuple[str, str]) -> bytes:
        out = io.BytesIO()
        writer = WARCWriter(out, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), *headers], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("https://e.example/", "response", payload=io.BytesIO(body),
                                                      http_headers=http))
        return out.getvalue()

    cases = {
        "gzip": response(gzip.compress(html), ("Content-Encoding", "gzip")),
        "chunked": response(b"10\r\n" + html[:16] + b"\r\n" + f"{len(html) - 16:x}".encode() + b"\r\n" + html[16:]
                            + b"\r\n0\r\n\r\n", ("Transfer-Encoding", "chunked")),
        "stored decoded": response(html, ("Content-Encoding", "gzip")),  # as ClueWeb09 stores its pages
        "not chunked": response(html, ("Transfer-Encoding", "chunked")),
    }
    for case, data in cases.items():
        path = tmp_path / "e.warc.gz"
        path.write_bytes(data)
        (row,) = read(path)
        assert row.get("html") == html.decode(), (case, row)
    path.write_bytes(response(b"\x1b\x2a\x00\xff", ("Content-Encoding", "br")))  # neither brotli nor text
    assert [row["drop_reason"] for row in read(path)] == ["read:undecodable"]


def test_real_crawls_quirks(corpus):
    """ClueWeb09 (WARC/0.18, LF-only HTTP headers, EUC-JP, bodies stored decoded under ``Content-Encoding:
    gzip``), wget (target URIs in angle brackets), and Common Crawl WET fragments whose WARC header lines
    end in a bare LF, against the WARC spec."""
    clueweb = read(corpus / "web" / "warc" / "clueweb09-ja-eucjp.warc.gz")
    assert reasons(clueweb) == Counter({"kept": 29, "read:record_type:warcinfo": 1})
    assert all("\ufffd" not in row["html"] and "<html" in row["html"].lower() for row in clueweb[1:])
    wget = read(corpus / "web" / "warc" / "crawl-sample-0000.warc.gz")
    assert all(row["url"].startswith("https://") for row in wget if "html" in row)
    lf_only = read(corpus / "web" / "wet-malformed" / "file_headers_only.wet.gz")
    assert reasons(lf_only) == Counter({"read:malformed_header": 1})


def test_jsonl_keeps_given_ids_and_counts_bad_lines(tmp_path):
    lines = [
        json.dumps({"id": "doc-1", "text": "first", "url": "https://x.example/1"}),
        "{not json",
        json.dumps({"text": "no id here"}),
        json.dumps({"id": "doc-3", "text": ""}),
        json.dumps(["a", "list"]),
    ]
    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    rows = read(path)
    assert rows[0]["id"] == "doc-1" and rows[0]["text"] == "first"
    assert rows[2]["text"] == "no id here" and rows[2]["id"] != rows[0]["id"]
    assert reasons(rows) == Counter({"kept": 2, "read:malformed_record": 2, "read:empty_payload": 1})


def test_parquet_input_with_text_column(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["p1", None], "text": ["hello parquet", "second"]}), path)
    rows = read(path)
    assert rows[0]["id"] == "p1" and rows[1]["text"] == "second" and rows[1]["id"]
    pq.write_table(pa.table({"body": ["no text column"]}), path)
    assert reasons(read(path)) == Counter({"read:missing_column:text": 1})


def test_plain_text_file_is_one_document(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("To be, or not to be.\nThat is the question.\n")
    (row,) = read(path)
    assert row["text"].startswith("To be") and "drop_reason" not in row


def test_plain_text_paragraphs_are_documents_with_ids_that_survive_a_move(tmp_path):
    text = "First speech,\nin two lines.\n\nSecond speech.\n\n\n\nThird, after a wide gap.\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "play.txt").write_text(text)
    rows = list(read_file(str(tmp_path / "a" / "play.txt"), ReadConfig(text_documents="paragraphs")))
    assert [row["text"] for row in rows] == ["First speech,\nin two lines.", "Second speech.", "Third, after a wide gap.\n"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "play.txt").write_text(text)
    moved = list(read_file(str(tmp_path / "b" / "play.txt"), ReadConfig(text_documents="paragraphs")))
    assert [row["id"] for row in moved] == [row["id"] for row in rows] and len({row["id"] for row in rows}) == 3


def test_a_saved_html_page_is_one_document_decoded_by_its_meta_charset(tmp_path):
    page = '<html><head><meta charset="windows-1252"></head><body><p>Caf\u00e9 cr\u00e8me</p></body></html>'
    (tmp_path / "page.html.gz").write_bytes(gzip.compress(page.encode("windows-1252")))
    (tmp_path / "LICENSE").write_text("not an input")
    (listed,) = list_inputs([str(tmp_path)])
    (row,) = read(Path(listed["path"]))
    assert row["html"] == page and row["content_type"] == "text/html" and "drop_reason" not in row


def test_read_files_batches_rows(tmp_path):
    path = tmp_path / "a.warc.gz"
    path.write_bytes(warc_bytes([(f"https://example.com/{i}", HTML, "text/html") for i in range(5)]))
    batches = list(read_files(pa.table({"path": [str(path)]}), ReadConfig(batch_size=2)))
    assert [len(b) for b in batches] == [2, 2, 1]


def test_list_inputs_expands_folders_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.warc.gz", "sub/b.jsonl", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    assert [Path(i["path"]).name for i in list_inputs([str(tmp_path)])] == ["a.warc.gz", "b.jsonl"]
    assert [Path(i["path"]).name for i in list_inputs([str(tmp_path / "*.warc.gz")])] == ["a.warc.gz"]
    with pytest.raises(FileNotFoundError):
        list_inputs([str(tmp_path / "*.parquet")])


def test_shared_malformed_wet_files_never_raise(corpus):
    """Real truncated, headerless and corrupt WET fragments: every record is a row, none raise."""
    counts: Counter = Counter()
    for path in sorted((corpus / "web" / "wet-malformed").glob("*.wet.gz")):
        rows = read(path)
        assert len({r["id"] for r in rows}) == len(rows), path.name
        counts.update(reasons(rows))
    assert counts["kept"] > 30
    for reason in ("read:truncated_gzip", "read:malformed_header", "read:truncated_record"):
        assert counts[reason] >= 1, counts


def test_ids_hash_the_path_below_the_input_root(tmp_path):
    """Same-named files in two folders get their own ids; moving the whole root keeps them."""
    for root in ("crawl", "moved"):
        for language in ("en", "de"):
            (tmp_path / root / language).mkdir(parents=True)
            (tmp_path / root / language / "part-0.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    ids = {}
    for pattern in ("crawl", "moved", "crawl/*/part-0.jsonl"):
        files = pa.Table.from_pylist(list_inputs([str(tmp_path / pattern)]))
        assert sorted(files["name"].to_pylist()) == ["de/part-0.jsonl", "en/part-0.jsonl"]
        ids[pattern] = [row["id"] for batch in read_files(files, ReadConfig()) for row in batch.to_pylist()]
    assert len(set(ids["crawl"])) == 2
    assert ids["crawl"] == ids["moved"] == ids["crawl/*/part-0.jsonl"]
    (single,) = list_inputs([str(tmp_path / "crawl" / "en" / "part-0.jsonl")])
    assert single["name"] == "part-0.jsonl"


def test_dump_comes_from_the_record_then_the_path_then_the_config(tmp_path, corpus):
    wet = corpus / "web" / "wet" / "cc-main-2016-50-sample.warc.wet.gz"
    assert {row["dump"] for row in read(wet)} == {"CC-MAIN-2016-50"}  # its warcinfo record's isPartOf
    crawl_path = tmp_path / "crawl-data" / "CC-MAIN-2024-10" / "segments" / "a.warc.gz"
    crawl_path.parent.mkdir(parents=True)
    crawl_path.write_bytes(warc_bytes([("https://a.example/", HTML, "text/html")]))  # no warcinfo record
    assert {row["dump"] for row in read(crawl_path)} == {"CC-MAIN-2024-10"}
    assert {row["dump"] for row in read(crawl_path, dump="mine")} == {"CC-MAIN-2024-10"}  # the path wins
    plain = tmp_path / "plain.warc.gz"
    plain.write_bytes(warc_bytes([("https://a.example/", HTML, "text/html")]))
    assert {row["dump"] for row in read(plain)} == {None}
    assert {row["dump"] for row in read(plain, dump="crawl-7")} == {"crawl-7"}
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        json.dumps({"text": "a", "dump": "CC-MAIN-2019-09"}) + "\n"
        + json.dumps({"text": "b", "dump": "crawl-data/CC-MAIN-2020-16/segments/1/wet/x.wet.gz"}) + "\n"
        + json.dumps({"text": "c"}) + "\n"
    )
    assert [row["dump"] for row in read(jsonl, dump="fallback")] == ["CC-MAIN-2019-09", "CC-MAIN-2020-16", "fallback"]
