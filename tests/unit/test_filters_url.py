"""URL blocklists: host normalization, domain vs subdomain matches, URL fragments, batch handling."""

import pytest

from pipeline.documents import table_from_rows
from pipeline.filters.url import SubstringMatcher, URLFilter, URLFilterConfig, normalize_host, url_host
from pipeline.stage import Drop


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Example.COM/a?b", "example.com"),
        ("http://www.example.com:8080/", "example.com"),
        ("https://user:pw@WWW.Example.com./x", "example.com"),
        ("https://bücher.de/", "xn--bcher-kva.de"),
        # IDNA 2008 keeps the sharp s (IDNA 2003 mapped it to "ss", another domain).
        ("https://straße.de/", "xn--strae-oqa.de"),
        ("example.com/path", "example.com"),
        ("http://[::1]:80/", "::1"),
        ("http://[oops/", ""),
    ],
)
def test_hosts_are_normalized(url, host):
    assert url_host(url) == host


def test_www_is_removed_only_at_the_start():
    assert normalize_host("www.wwwexample.com") == "wwwexample.com"
    assert normalize_host("a.www.example.com") == "a.www.example.com"


@pytest.fixture
def url_filter(tmp_path):
    domains = tmp_path / "domains"
    domains.write_text("# adult sites\n\nexample.com\nWWW.Bücher.de\nhttps://listed-as-url.org:443/x\n")
    fragments = tmp_path / "urls"
    fragments.write_text("badsite.net/path\nCASINO\n")
    config = URLFilterConfig(domain_blocklist_files=[str(domains)], url_substring_blocklist_files=[str(fragments)])
    return URLFilter(config)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/", "domain"),
        ("http://WWW.EXAMPLE.COM:80/page", "domain"),
        ("https://cdn.a.example.com/x.js", "subdomain"),
        ("https://xn--bcher-kva.de/", "domain"),
        ("https://shop.bücher.de/", "subdomain"),
        ("http://listed-as-url.org/", "domain"),
        ("https://badsite.net/path/more", "url_substring"),
        ("https://news.org/best-Casino-ever", "url_substring"),
        ("https://badexample.com/", None),
        ("https://example.com.evil.org/", None),
        ("https://badsite.net/other", None),
    ],
)
def test_blocklists(url_filter, url, reason):
    assert url_filter.check([url]) == [Drop(reason) if reason else None]


def test_a_host_and_a_domain_above_it_both_listed_is_a_domain_match(tmp_path):
    domains = tmp_path / "domains"
    domains.write_text("example.com\ncdn.example.com\n")
    url_filter = URLFilter(URLFilterConfig(domain_blocklist_files=[str(domains)]))
    assert url_filter.check(["https://cdn.example.com/", "https://x.cdn.example.com/"]) == [
        Drop("domain"),
        Drop("subdomain"),
    ]


def test_substring_matcher_finds_any_fragment_and_matches_nothing_when_empty():
    matcher = SubstringMatcher({"abc", "abcdefghijk", "xyz"})
    assert matcher.search("123abc") and matcher.search("--xyz--") and matcher.search("zabcdefghijkz")
    assert not matcher.search("ab-c xy")
    assert not SubstringMatcher(set()).search("anything")


@pytest.fixture
def fineweb_filter(tmp_path):
    """FineWeb's URL rules, with small hand-written lists."""

    def listing(name: str, text: str) -> list[str]:
        (tmp_path / name).write_text(text)
        return [str(tmp_path / name)]

    return URLFilter(
        URLFilterConfig(
            url_blocklist_files=listing("urls", "https://news.org/listed-page\n"),
            banned_words_files=listing("banned", "# whole words\nXXX\nporn\n"),
            soft_banned_words_files=listing("soft", "hot\ngirls\nlive\n"),
            banned_subwords_files=listing("subwords", "casino\npornhub\n"),
        )
    )


@pytest.mark.parametrize(
    ("url", "reason", "value"),
    [
        ("https://news.org/listed-page", "url", None),
        ("https://news.org/listed-page/2", None, None),  # a listed URL matches only whole
        ("https://x.com/free-PORN/videos", "banned_word", None),
        ("https://x.com/xxx.html", "banned_word", None),
        ("https://x.com/pornography-laws", None, None),  # a banned word matches whole words only
        ("https://x.com/hot-news", None, None),  # one soft-banned word is not enough
        ("https://x.com/hot/live-cams", "soft_banned_words", 2),
        ("https://x.com/hot-girls-live", "soft_banned_words", 3),
        ("https://best-ca-sino.example/", "banned_subword", None),  # letters and digits alone
        ("https://x.com/PornHub-clips", "banned_subword", None),
        ("https://x.com/cooking/recipes", None, None),
    ],
)
def test_fineweb_rules(fineweb_filter, url, reason, value):
    assert fineweb_filter.check([url]) == [Drop(reason, value) if reason else None]


def test_soft_banned_threshold_is_configurable(tmp_path):
    (tmp_path / "soft").write_text("hot\n")
    url_filter = URLFilter(URLFilterConfig(soft_banned_words_files=[str(tmp_path / "soft")], soft_banned_threshold=1))
    assert url_filter.check(["https://x.com/hot-news"]) == [Drop("soft_banned_words", 1)]


def test_batches_keep_rows_without_url_and_rows_already_dropped(url_filter):
    batch = table_from_rows(
        [
            {"id": "1", "url": "https://example.com/", "text": "a"},
            {"id": "2", "url": None, "text": "b"},
            {"id": "3", "url": "https://example.com/", "text": "c", "drop_reason": "extract:empty"},
            {"id": "4", "url": "https://fine.org/", "text": "d"},
        ]
    )
    out = url_filter(batch)
    assert out["drop_reason"].to_pylist() == ["url_filter:domain", None, "extract:empty", None]
    assert out["text"].to_pylist() == [None, "b", "c", "d"]
    assert url_filter.take_stats() == {"no_url": 1}


def test_no_lists_pass_everything_through():
    batch = table_from_rows([{"id": "1", "url": "https://example.com/", "text": "a"}])
    assert URLFilter()(batch) is batch
