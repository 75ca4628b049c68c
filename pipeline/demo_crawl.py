"""Generates the demo "crawl": two small WARC files the project writes itself.

    python -m pipeline.demo_crawl data/demo-crawl

The pages are made from hand-written sentence templates filled by a seeded generator, so the
output is identical on every machine. The crawl holds what a real one does and what the
pipeline must deal with:

- English articles wrapped in navigation, cookie banners and footers (boilerplate to extract away);
- pages in German, French and Spanish (removed by language ID);
- keyword-stuffed spam and link farms (Gopher repetition and quality rules);
- near-empty pages (too few words);
- pages with e-mail addresses and IP addresses (PII masking);
- exact copies and lightly edited near-copies of articles under other URLs (deduplication);
- a non-HTML response and request records (counted, never kept).
"""

from __future__ import annotations

import argparse
import io
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

SEED = 20261129
N_ARTICLES = 160

TOPICS = {
    "gardening": (
        ["tomato plants", "raised beds", "compost heaps", "rose bushes", "herb gardens", "apple trees", "seed trays"],
        ["water them early in the morning", "turn the soil before the first frost", "mulch them after heavy rain",
         "prune the oldest branches in late winter", "feed them with a weak seaweed solution"],
    ),
    "cycling": (
        ["road bikes", "chain rings", "brake pads", "tubeless tyres", "touring routes", "gravel tracks", "saddle bags"],
        ["check the pressure before every ride", "clean the drivetrain after wet weather",
         "replace worn parts before a long tour", "carry a spare tube and a small pump", "ride in a lower gear uphill"],
    ),
    "baking": (
        ["sourdough loaves", "rye starters", "butter pastries", "oat biscuits", "fruit cakes", "bread tins", "proving baskets"],
        ["let the dough rest for an hour", "weigh the flour instead of using cups", "bake them on the middle shelf",
         "cool them on a wire rack", "keep the starter in a warm corner of the kitchen"],
    ),
    "astronomy": (
        ["binocular targets", "planetary nebulae", "lunar craters", "star charts", "refracting telescopes", "meteor showers"],
        ["let your eyes adapt to the dark for twenty minutes", "observe them when the moon is low",
         "note the time and the sky conditions", "start with a low-power eyepiece", "travel away from city lights"],
    ),
    "history": (
        ["market towns", "canal networks", "parish records", "medieval bridges", "railway stations", "harbour walls"],
        ["compare the old maps with the modern streets", "read the council minutes from that decade",
         "visit the local archive on a weekday", "ask older residents what they remember", "photograph the inscriptions"],
    ),
}

OPENERS = [
    "Most people who start with {thing} soon discover that the details matter more than the equipment.",
    "There is a simple reason why {thing} have become so popular over the last few years.",
    "When we first wrote about {thing}, the advice that readers sent back surprised us.",
    "Anyone who has spent a season with {thing} knows that patience is the real skill.",
]
MIDDLES = [
    "The best approach is to {advice}, and to keep a short note of what happened.",
    "It is worth remembering that you should {advice} even when the weather is poor.",
    "Several readers told us that they {advice} and saw a clear difference within a month.",
    "If you only change one habit, {advice}; the rest of the routine can stay the same.",
    "A common mistake is to forget that {thing} need attention at different times of the year.",
    "The cost is small, but the time it takes to learn about {thing} is easy to underestimate.",
    "We asked {person} for an opinion, and the answer was to {advice}.",
    "This is also the point where {thing} start to reward the work that went into them.",
    "Local clubs are a good place to ask questions, because members have usually tried it before.",
    "None of this needs special tools, and most of it can be done in a single {time}.",
    "{person} once said that {thing} teach you more about patience than any book.",
    "Our own notebook from last {time} shows how much changed after a few small adjustments.",
    "You do not have to copy every step; pick the two or three that suit your {place}.",
    "Prices have gone up, yet a second-hand set is often good enough for a beginner.",
    "Keep a calendar near the door so that nobody forgets what was done and when.",
    "The results were mixed at first, which is normal for anyone new to {thing}.",
    "Ask at the {place} before you buy anything expensive, because they often lend equipment.",
    "Write down the date, the conditions and what you tried, then compare after a season.",
    "There is no single right answer, and experienced people still disagree about {thing}.",
    "Small children can help too, as long as somebody explains why each step matters.",
    "When something goes wrong, look first at the simplest cause before blaming the weather.",
    "A friend of ours at the {place} keeps a list of mistakes, and it is longer than you might think.",
    "Try to {advice} for two weeks, and then decide whether the effort was worth it.",
    "Good habits spread quickly: once one neighbour starts, the whole street tends to follow.",
    "It also helps to read the older guides, since many of their ideas still work today.",
    "If the budget is tight, borrow before you buy and share the cost with a friend.",
    "Most problems with {thing} come from rushing, so slow down and check each stage.",
    "The {time} after a long break is always the hardest, and then the rhythm comes back.",
    "Photographs are a simple way to see progress that you would otherwise miss.",
    "Nobody gets it perfect, and that is exactly what makes {thing} interesting.",
]
PEOPLE = ["our neighbour Margaret", "a retired teacher", "the club secretary", "a reader from the coast",
          "an old friend", "the shop owner", "a local volunteer"]
PLACES = ["library", "community hall", "garden centre", "town museum", "local market", "club house"]
TIMES = ["weekend", "afternoon", "morning", "summer", "winter", "holiday"]
CLOSERS = [
    "In the end, the people who enjoy {thing} most are the ones who keep learning from small mistakes.",
    "We will come back to {thing} in a later article, with more examples from our readers.",
    "Take your time, write down what works for you, and share it with others who are just starting.",
]

OTHER_LANGUAGES = {
    "de": [
        "Der kleine Garten hinter dem Haus wird im Frühling von der ganzen Familie gepflegt.",
        "Wir fahren am Wochenende mit dem Fahrrad an den See und machen dort ein Picknick.",
        "Das Brot aus dem Ofen riecht so gut, dass niemand bis zum Abendessen warten möchte.",
        "Die Sterne sind in dieser Nacht besonders klar zu sehen, weil kein Mond am Himmel steht.",
        "In der alten Stadt gibt es viele Brücken, die schon seit Jahrhunderten stehen.",
    ],
    "fr": [
        "Le petit jardin derrière la maison est entretenu par toute la famille au printemps.",
        "Nous partons à vélo le samedi matin pour rejoindre le marché du village voisin.",
        "Le pain sort du four et toute la cuisine sent bon la farine et le beurre.",
        "Cette nuit, les étoiles sont très visibles parce que la lune est déjà couchée.",
        "La vieille ville garde encore ses ponts de pierre et ses rues étroites.",
    ],
    "es": [
        "El pequeño jardín detrás de la casa lo cuida toda la familia durante la primavera.",
        "Los domingos salimos en bicicleta hasta el río y volvemos antes de la comida.",
        "El pan recién hecho huele tan bien que nadie quiere esperar a la cena.",
        "Esta noche las estrellas se ven muy claras porque no hay luna en el cielo.",
        "En el casco antiguo hay muchos puentes que tienen varios siglos de historia.",
    ],
}

NAV = (
    '<nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/guides">Guides</a></li>'
    '<li><a href="/shop">Shop</a></li><li><a href="/about">About us</a></li><li><a href="/contact">Contact</a></li></ul></nav>'
)
COOKIE_BANNER = (
    '<div class="cookie-banner">We use cookies to improve your experience. By using this site you agree to our '
    '<a href="/privacy">privacy policy</a> and <a href="/terms">terms of use</a>. <button>Accept</button></div>'
)
FOOTER = (
    '<footer><p>Copyright 2026 {site}. All rights reserved.</p><ul><li><a href="/privacy">Privacy</a></li>'
    '<li><a href="/terms">Terms</a></li><li><a href="/sitemap">Sitemap</a></li></ul>'
    '<p>Follow us on social media | Subscribe to our newsletter</p></footer>'
)
SITES = ["greenplot.example.org", "wheelwise.example.com", "crumbandcrust.example.net", "nightsky.example.org",
         "oldtown.example.com"]


@dataclass
class Page:
    url: str
    html: str
    content_type: str = "text/html; charset=utf-8"


def article_paragraphs(rng: random.Random, topic: str) -> list[str]:
    """An opener, nine distinct body sentences in three paragraphs, and a closer.

    Sentences and fill-ins are drawn without repetition inside one article, so an article never
    repeats itself (the Gopher repetition rule would rightly drop it), and two articles share few
    sentences (so only the planted copies are near duplicates).
    """
    things, advice = TOPICS[topic]
    thing = rng.choice(things)
    advice_left = rng.sample(advice, len(advice))
    slots = {
        "thing": lambda: rng.choice(things),
        "advice": lambda: advice_left.pop() if advice_left else rng.choice(advice),
        "person": lambda: rng.choice(PEOPLE),
        "place": lambda: rng.choice(PLACES),
        "time": lambda: rng.choice(TIMES),
    }

    def fill(template: str) -> str:
        return template.format(**{name: make() for name, make in slots.items() if "{" + name + "}" in template})

    body = [fill(t) for t in rng.sample(MIDDLES, 9)]
    opener = fill(rng.choice(OPENERS).replace("{thing}", thing))
    paragraphs = [
        " ".join([opener, f"This guide explains what we learned about {thing} and why it worked.", *body[:3]]),
        " ".join(body[3:6]),
        " ".join(body[6:]),
        rng.choice(CLOSERS).format(thing=thing),
    ]
    return paragraphs


def wrap(site: str, title: str, paragraphs: list[str], lang: str = "en") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>body {{ font-family: sans-serif; }}</style><script>var tracking = 'demo';</script></head>"
        f"<body><header><h1>{site}</h1>{NAV}</header>{COOKIE_BANNER}"
        f"<main><article><h2>{title}</h2>{body}</article></main>"
        f'<aside><h3>Popular</h3><ul><li><a href="/a">Ten quick tips</a></li><li><a href="/b">Reader letters</a></li></ul></aside>'
        f"{FOOTER.format(site=site)}</body></html>"
    )


def near_copy(rng: random.Random, paragraphs: list[str]) -> list[str]:
    """The same article lightly edited: a word dropped, a word swapped, a sentence appended."""
    edited = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if len(words) > 20 and rng.random() < 0.5:
            del words[rng.randrange(len(words))]
        edited.append(" ".join(words))
    edited[-1] += " Updated with a note from our editor."
    return edited


def generate_pages() -> list[Page]:
    rng = random.Random(SEED)
    pages: list[Page] = []
    articles: list[tuple[str, str, list[str]]] = []
    topics = list(TOPICS)
    for n in range(N_ARTICLES):
        topic = topics[n % len(topics)]
        site = SITES[n % len(SITES)]
        paragraphs = article_paragraphs(rng, topic)
        if n % 17 == 3:
            paragraphs.insert(2, f"Questions about this guide can go to editor{n}@{site} or to our office server at 93.184.216.{n % 250}.")
        title = f"{topic.title()} notes, part {n + 1}"
        articles.append((site, title, paragraphs))
        pages.append(Page(f"https://{site}/{topic}/{n + 1}", wrap(site, title, paragraphs)))

    for n, (site, title, paragraphs) in enumerate(articles[:10]):
        # Exact copies: syndicated under another URL, same text.
        pages.append(Page(f"https://mirror{n}.example.net/copy/{n}", wrap(f"mirror{n}.example.net", title, paragraphs)))
    for n, (site, title, paragraphs) in enumerate(articles[20:32]):
        pages.append(Page(f"https://reposts.example.com/{n}", wrap("reposts.example.com", title, near_copy(rng, paragraphs))))

    for lang, sentences in OTHER_LANGUAGES.items():
        for n in range(6):
            paragraphs = [" ".join(rng.sample(sentences, 4)) for _ in range(4)]
            pages.append(Page(f"https://{lang}.example.eu/seite/{n}", wrap(f"{lang}.example.eu", sentences[n % 5][:40], paragraphs, lang)))

    for n in range(8):
        spam = " ".join(["Buy cheap watches online best price cheap watches free shipping"] * 30)
        pages.append(Page(f"https://deals{n}.example.biz/offer", wrap(f"deals{n}.example.biz", "BEST DEALS", [spam])))
    for n in range(5):
        links = "".join(f'<li><a href="/p{i}">casino bonus {i}</a></li>' for i in range(60))
        pages.append(Page(f"https://linkfarm{n}.example.biz/", f"<html><body><ul>{links}</ul></body></html>"))
    for n in range(6):
        pages.append(Page(f"https://{SITES[n % 5]}/tag/{n}", wrap(SITES[n % 5], "Tag archive", ["No posts found."])))

    pages.append(Page("https://greenplot.example.org/logo.png", "\x89PNG fake image bytes", "image/png"))
    rng.shuffle(pages)
    return pages


def write_warc(path: Path, pages: list[Page]) -> None:
    with path.open("wb") as output:
        writer = WARCWriter(output, gzip=True)
        for index, page in enumerate(pages):
            request = writer.create_warc_record(
                page.url,
                "request",
                payload=io.BytesIO(f"GET / HTTP/1.1\r\nHost: {page.url.split('/')[2]}\r\n\r\n".encode()),
                warc_headers_dict=_fixed_headers(path.name, index, "request"),
            )
            http_headers = StatusAndHeaders("200 OK", [("Content-Type", page.content_type)], protocol="HTTP/1.1")
            response = writer.create_warc_record(
                page.url,
                "response",
                payload=io.BytesIO(page.html.encode("utf-8")),
                http_headers=http_headers,
                warc_headers_dict=_fixed_headers(path.name, index, "response"),
            )
            writer.write_record(request)
            writer.write_record(response)


def _fixed_headers(file_name: str, index: int, kind: str) -> dict[str, str]:
    """Record ids and dates fixed by position, so every generation is byte-identical."""
    record_id = uuid.uuid5(uuid.NAMESPACE_URL, f"demo-crawl/{file_name}/{index}/{kind}")
    return {"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": f"2026-11-{1 + index % 28:02d}T12:00:00Z"}


def write_demo_crawl(out_dir: str | Path, n_files: int = 2) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = generate_pages()
    paths = []
    for part in range(n_files):
        path = out / f"demo-crawl-{part:05d}.warc.gz"
        write_warc(path, pages[part::n_files])
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the generated demo crawl (WARC files).")
    parser.add_argument("out_dir", nargs="?", default="data/demo-crawl")
    args = parser.parse_args()
    for path in write_demo_crawl(args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
