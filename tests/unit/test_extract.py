"""The extract stage on hand-written pages: main content kept, boilerplate and code left out, bad pages dropped."""

from __future__ import annotations

import pytest

import pipeline.extract
from pipeline.config import ConfigError, validate
from pipeline.documents import table_from_rows
from pipeline.extract import Extract, ExtractConfig

EXTRACTORS = ["resiliparse", "trafilatura"]

ARTICLE_PARAGRAPHS = [
    "The river town of Hollowmere rebuilt its wooden footbridge this spring, after the winter floods "
    "had carried the old one two miles downstream and left it wedged against the mill.",
    "Volunteers cut new planks from fallen oaks on the eastern ridge, and the blacksmith forged every "
    "bolt by hand, so the whole bridge cost the town less than a single season of ferry fares.",
    "Children were the first to cross it on the morning it opened, racing each other from bank to bank "
    "while their grandparents watched from the benches by the water and argued about the old bridge.",
    "The council has promised to inspect the timbers each autumn, and the mill owner has offered to "
    "store spare planks in his loft until the next flood comes, as everyone agrees it one day will.",
]

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <title>Hollowmere rebuilds its footbridge</title>
  <style>body {{ font-family: CascadiaStyleRule; }}</style>
  <script>var trackingPixelScript = "should never reach the text";</script>
</head>
<body>
  <nav class="menu"><ul>
    <li><a href="/">Home</a></li><li><a href="/news">News</a></li>
    <li><a href="/weather">Weather</a></li><li><a href="/subscribe">Subscribe now</a></li>
  </ul></nav>
  <main><article>
    <h1>Hollowmere rebuilds its footbridge</h1>
    {"".join(f"<p>{paragraph}</p>" for paragraph in ARTICLE_PARAGRAPHS)}
  </article></main>
  <footer class="footer"><p>Copyright Hollowmere Gazette. All rights reserved.</p>
    <a href="/privacy">Privacy policy</a> <a href="/cookies">Cookie settings</a></footer>
  <script>document.write("inlineScriptMarker");</script>
</body>
</html>"""


def run(rows: list[dict], **config) -> tuple[Extract, list[dict]]:
    stage = Extract(ExtractConfig(**config))
    return stage, stage(table_from_rows(rows)).to_pylist()


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_keeps_the_article_and_leaves_out_boilerplate_and_code(extractor):
    stage, [row] = run([{"id": "a", "html": PAGE}], extractor=extractor)
    assert row["drop_reason"] is None
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in row["text"]
    for boilerplate in ("Subscribe now", "All rights reserved", "Cookie settings", "Weather"):
        assert boilerplate not in row["text"]
    for code in ("CascadiaStyleRule", "trackingPixelScript", "inlineScriptMarker"):
        assert code not in row["text"]
    assert row["html"] is None
    assert stage.stats["extracted"] == 1
    assert stage.stats["text_bytes"] == len(row["text"].encode())


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_paragraphs_stay_on_separate_lines(extractor):
    _, [row] = run([{"id": "a", "html": PAGE}], extractor=extractor)
    lines = [line.strip() for line in row["text"].splitlines()]
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in lines


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_main_content_off_keeps_the_whole_page(extractor):
    _, [row] = run([{"id": "a", "html": PAGE}], extractor=extractor, main_content=False)
    assert "Subscribe now" in row["text"]
    assert ARTICLE_PARAGRAPHS[0] in row["text"]
    assert "trackingPixelScript" not in row["text"]


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize(
    "html",
    [
        "<html><head><script>var onlyCode = 1;</script><style>p {}</style></head><body>  </body></html>",
        "<body><p>&nbsp;&nbsp;</p><p>\u3000</p></body>",
        "\x00" * 64,
        "",
    ],
    ids=["only-script-and-style", "only-non-breaking-spaces", "nul-bytes", "empty-string"],
)
def test_page_without_text_is_dropped_as_empty(extractor, html):
    stage, [row] = run([{"id": "a", "html": html}], extractor=extractor)
    assert row["drop_reason"] == "extract:empty"
    assert row["text"] is None and row["html"] is None
    assert stage.stats["extracted"] == 0


def test_extractor_error_drops_only_that_page(monkeypatch):
    real = pipeline.extract.extract_plain_text

    def fails_on_marked_pages(html, **options):
        if "explode-here" in html:
            raise RuntimeError("parser blew up")
        return real(html, **options)

    monkeypatch.setattr(pipeline.extract, "extract_plain_text", fails_on_marked_pages)
    stage, rows = run(
        [
            {"id": "a", "html": PAGE},
            {"id": "b", "html": "<p>explode-here</p>"},
            {"id": "c", "html": PAGE},
        ],
        extractor="resiliparse",
    )
    assert [row["drop_reason"] for row in rows] == [None, "extract:error", None]
    assert rows[1]["html"] is None and rows[1]["text"] is None
    assert stage.stats["extracted"] == 2


def test_oversized_page_is_dropped_unparsed_with_its_size():
    small = "<p>Short but real text about the footbridge.</p>"
    stage, rows = run(
        [{"id": "big", "html": PAGE}, {"id": "small", "html": small}], max_html_bytes=len(small.encode())
    )
    assert rows[0]["drop_reason"] == "extract:too_large"
    assert rows[0]["drop_value"] == len(PAGE.encode())
    assert rows[1]["text"] == "Short but real text about the footbridge."


def test_text_rows_and_earlier_drops_pass_through_unchanged():
    rows = [
        {"id": "wet", "url": "http://x.test/", "source": "wet", "text": "Already plain text.\nSecond line."},
        {"id": "gone", "drop_reason": "url:blocklist", "drop_value": 1.0},
        {"id": "page", "html": PAGE},
    ]
    _, out = run(rows)
    assert out[0] == {**dict.fromkeys(out[0]), **rows[0]}
    assert (out[1]["drop_reason"], out[1]["drop_value"], out[1]["text"]) == ("url:blocklist", 1.0, None)
    assert out[2]["drop_reason"] is None and ARTICLE_PARAGRAPHS[0] in out[2]["text"]


def test_bad_config_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"^extract\.extractor: "):
        validate(ExtractConfig, {"extractor": "beautifulsoup"}, prefix="extract")
    with pytest.raises(ConfigError, match=r"^extract\.max_html_bytes: "):
        validate(ExtractConfig, {"max_html_bytes": 0}, prefix="extract")
