"""The synthetic web dump: HTML pages on several site templates, written to a WARC with its ground truth."""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import io
import random
import re
import struct
import unicodedata
import uuid
import zlib
from collections import Counter
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from gristmill.demo import lexicon as lx

SPAM_KINDS = ["spam_keywords", "spam_repeated_lines", "spam_short", "spam_filler", "spam_symbols"]
DUP_KINDS = ("exact_duplicate", "near_duplicate")

# Five sites, each with its own layout and class names, so boilerplate differs between pages.
SITES = [
    {"name": "Hearth & Hedge", "slug": "hearthandhedge", "tld": "com", "layout": "classic",
     "server": "nginx/1.24.0"},
    {"name": "Northfield Notes", "slug": "northfieldnotes", "tld": "org", "layout": "leftbar",
     "server": "Apache/2.4.58 (Debian)"},
    {"name": "The Weekend Ledger", "slug": "weekendledger", "tld": "net", "layout": "magazine",
     "server": "cloudflare"},
    {"name": "Quiet Corner", "slug": "quietcorner", "tld": "blog", "layout": "blog",
     "server": "LiteSpeed"},
    {"name": "Open Road Review", "slug": "openroadreview", "tld": "co.uk", "layout": "portal",
     "server": "openresty"},
]

# Mirror hosts that re-serve other sites' pages byte for byte (exact duplicates).
MIRRORS = ["archive-mirror.net", "pagecache.info", "webcopy.example.org"]
SPAM_HOSTS = ["best-deals-4u.biz", "cheap-offers-now.info", "win-big-today.top",
              "free-stuff-zone.xyz", "top10-reviews.click"]
LEGACY_CHARSETS = {"de": ["windows-1252", "iso-8859-1"], "fr": ["windows-1252"],
                   "es": ["iso-8859-1", "windows-1252"], "ru": ["windows-1251", "koi8-r"]}
LANG_WEIGHTS = {"en": 0.72, "de": 0.07, "fr": 0.07, "es": 0.07, "ru": 0.07}
CRAWL_START = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.timezone.utc)
USER_AGENT = "gristmill-demo-crawler/0.1 (+https://gristmill.example/bot)"


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def esc(text: str) -> str:
    return html.escape(text, quote=False)


def slugify(text: str, fallback: str) -> str:
    # "Gedanken über" -> "gedanken-uber"; scripts with no ASCII letters fall back.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())[:6]
    return "-".join(words) or fallback


def site_host(site: dict, lang: str) -> str:
    # English pages live on the sites' own domains, other languages on national domains.
    return f"www.{site['slug']}.{site['tld']}" if lang == "en" else f"{site['slug']}.{lang}"


def nav_links(site_index: int, lang: str) -> list[tuple[str, str]]:
    """A fixed menu per site and language (6-10 items), as real sites repeat on every page."""
    labels = lx.UI[lang]["nav"]
    count = 6 + site_index % 5
    start = site_index % 3
    picked = (labels[start:] + labels[:start])[:count]
    return [(label, "/" + (slugify(label, f"s{i}") if i else "")) for i, label in enumerate(picked)]


def record_id(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def warc_date(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(when: dt.datetime) -> str:
    # email.utils formats weekday and month in English whatever the locale is.
    return email.utils.format_datetime(when, usegmt=True)


def five_gram_jaccard(a: str, b: str) -> float:
    """Word 5-gram Jaccard similarity, the measure near-duplicate detection uses."""
    def grams(text: str) -> set:
        w = text.split()
        return {tuple(w[i:i + 5]) for i in range(max(1, len(w) - 4))}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / max(1, len(ga | gb))


# ---------------------------------------------------------------------------------------------
# Page layouts. Each takes the same context and returns a whole HTML document.
# ---------------------------------------------------------------------------------------------

def _head(c: dict) -> str:
    return (f'<!DOCTYPE html>\n<html lang="{c["lang"]}">\n<head>\n<meta charset="{c["charset"]}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(c["title"])} | {esc(c["site"])}</title>\n'
            f'<link rel="canonical" href="{esc(c["url"])}">\n'
            f'<link rel="stylesheet" href="/assets/{c["layout"]}.css">\n'
            f'<script src="/assets/analytics.js" defer></script>\n</head>\n')


def _paras(c: dict) -> str:
    return "\n".join(f"<p>{esc(p)}</p>" for p in c["paragraphs"])


def _links(items, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(f'<li{attr}><a href="{esc(h)}">{esc(t)}</a></li>' for t, h in items)


def _footer_links(c: dict) -> list[tuple[str, str]]:
    return [(t, "/" + slugify(t, "legal")) for t in c["ui"]["footer"]]


def layout_classic(c: dict) -> str:
    ui = c["ui"]
    comments = "\n".join(
        f'<div class="comment"><p class="comment-author">{esc(n)}</p><p>{esc(t)}</p>'
        f'<a class="reply" href="#respond">{esc(ui["reply"])}</a></div>' for n, t in c["comments"])
    return _head(c) + f"""<body class="single post-template">
<header class="site-header"><div class="logo"><a href="/">{esc(c["site"])}</a></div>
<nav class="main-nav"><ul>{_links(c["nav"])}</ul></nav>
<form class="search" action="/search"><input type="text" name="q" placeholder="{esc(ui["search"])}"></form></header>
<div class="cookie-banner" id="cookie-banner"><p>{esc(ui["cookie"])}</p><button class="accept">{esc(ui["accept"])}</button><button class="settings">{esc(ui["decline"])}</button></div>
<div class="container">
<main id="content">
<article class="post">
<h1 class="post-title">{esc(c["headline"])}</h1>
<p class="post-meta">{esc(ui["by"])} {esc(c["author"])} &middot; <time datetime="{c["date"]}">{c["date"]}</time></p>
{_paras(c)}
<div class="share">{esc(ui["share"])}: <a href="#">Facebook</a> <a href="#">X</a> <a href="#">Email</a></div>
</article>
<section class="comments"><h2>{esc(ui["comments"])} ({len(c["comments"])})</h2>
{comments}
<a id="respond" class="button">{esc(ui["leave_comment"])}</a></section>
</main>
<aside class="sidebar"><h3>{esc(ui["related"])}</h3><ul class="related">{_links(c["related"])}</ul>
<h3>{esc(ui["tags"])}</h3><ul class="tag-list">{_links(c["tags"], "tag")}</ul>
<div class="newsletter-box"><p>{esc(ui["newsletter"])}</p><input type="email" name="email"></div></aside>
</div>
<footer class="site-footer"><ul class="legal">{_links(_footer_links(c))}</ul>
<p>&copy; {c["year"]} {esc(c["site"])}. {esc(ui["rights"])}</p></footer>
</body>
</html>
"""


def layout_leftbar(c: dict) -> str:
    ui = c["ui"]
    nav = " | ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for t, h in c["nav"])
    comments = "\n".join(
        f'<li class="comment"><div class="comment-meta"><b class="fn">{esc(n)}</b></div>'
        f'<div class="comment-content"><p>{esc(t)}</p></div></li>' for n, t in c["comments"])
    tags = ", ".join(f'<a rel="tag" href="{esc(h)}">{esc(t)}</a>' for t, h in c["tags"])
    return _head(c) + f"""<body class="page two-column left-sidebar">
<div class="cc-window cc-banner" role="dialog"><span class="cc-message">{esc(ui["cookie"])}</span> <a class="cc-btn cc-allow">{esc(ui["accept"])}</a></div>
<div id="masthead"><p class="site-title"><a href="/">{esc(c["site"])}</a></p>
<nav id="topmenu" class="menu-horizontal">{nav}</nav></div>
<div class="wrap">
<aside class="widget-area"><section class="widget"><h2 class="widget-title">{esc(ui["related"])}</h2><ul>{_links(c["related"])}</ul></section>
<section class="widget"><h2 class="widget-title">{esc(ui["search"])}</h2><form><input name="s"></form></section></aside>
<main class="content-area">
<article class="entry">
<header class="entry-header"><h1 class="entry-title">{esc(c["headline"])}</h1>
<span class="posted-on">{c["date"]}</span> <span class="byline">{esc(c["author"])}</span></header>
<div class="entry-content">
{_paras(c)}
</div>
<footer class="entry-footer"><span class="tags-links">{esc(ui["tags"])}: {tags}</span></footer>
</article>
<div id="comments" class="comments-area"><h2 class="comments-title">{esc(ui["comments"])}</h2>
<ol class="comment-list">{comments}</ol></div>
</main>
</div>
<footer id="colophon"><div class="site-info">&copy; {c["year"]} {esc(c["site"])} &mdash; {esc(ui["rights"])}
<ul class="footer-menu">{_links(_footer_links(c))}</ul></div></footer>
</body>
</html>
"""


def layout_magazine(c: dict) -> str:
    ui = c["ui"]
    comments = "\n".join(
        f'<div class="reader-comment"><span class="commenter">{esc(n)}</span> <q>{esc(t)}</q></div>'
        for n, t in c["comments"])
    cols = _footer_links(c)
    return _head(c) + f"""<body class="article-page">
<div class="topbar"><span class="today">{c["date"]}</span> <a href="/newsletter">{esc(ui["newsletter"])}</a></div>
<header role="banner"><a class="brand" href="/">{esc(c["site"])}</a>
<nav class="navbar"><ul class="nav-items">{_links(c["nav"], "nav-item")}</ul></nav></header>
<div class="breadcrumbs"><a href="/">{esc(ui["home"])}</a> &rsaquo; <a href="/{c["topic"]}">{esc(c["topic_label"])}</a></div>
<main class="story">
<article class="story-body">
<h1 class="headline">{esc(c["headline"])}</h1>
<div class="byline">{esc(ui["by"])} <a rel="author">{esc(c["author"])}</a>, {c["date"]}</div>
<div class="story-text">
{_paras(c)}
</div>
<div class="topics">{" ".join(f'<a class="topic-pill" href="{esc(h)}">{esc(t)}</a>' for t, h in c["tags"])}</div>
</article>
<section class="reader-comments"><h3>{esc(ui["comments"])}</h3>
{comments}</section>
</main>
<aside class="more-stories"><h2>{esc(ui["popular"])}</h2><ol>{_links(c["related"])}</ol></aside>
<div class="consent-overlay" role="dialog"><p>{esc(ui["cookie"])}</p><button>{esc(ui["accept"])}</button></div>
<footer class="global-footer"><div class="footer-col"><ul>{_links(cols[:3])}</ul></div>
<div class="footer-col"><ul>{_links(cols[3:])}</ul></div>
<div class="footer-col"><p>&copy; {c["year"]} {esc(c["site"])}. {esc(ui["rights"])}</p></div></footer>
</body>
</html>
"""


def layout_blog(c: dict) -> str:
    ui = c["ui"]
    comments = "\n".join(
        f'<article class="response h-cite"><header class="p-author">{esc(n)}</header>'
        f'<div class="p-content">{esc(t)}</div></article>' for n, t in c["comments"])
    return _head(c) + f"""<body>
<div id="page">
<nav class="blog-menu" aria-label="primary"><a class="home-link" href="/">{esc(c["site"])}</a><ul>{_links(c["nav"], "menu-item")}</ul></nav>
<main id="main">
<article class="h-entry">
<h1 class="p-name">{esc(c["headline"])}</h1>
<a class="u-url" href="{esc(c["url"])}"><time class="dt-published" datetime="{c["date"]}">{c["date"]}</time></a>
<span class="p-author h-card">{esc(c["author"])}</span>
<div class="e-content">
{_paras(c)}
</div>
<footer class="entry-meta">{esc(ui["tags"])}: {" ".join(f'<a class="p-category" href="{esc(h)}">#{esc(t)}</a>' for t, h in c["tags"])}</footer>
</article>
<section class="responses"><h3>{esc(ui["comments"])}</h3>
{comments}
<p class="respond"><a href="#reply">{esc(ui["leave_comment"])}</a></p></section>
</main>
<aside id="secondary" class="widget-area"><section class="widget widget_recent_entries"><h2>{esc(ui["related"])}</h2><ul>{_links(c["related"])}</ul></section></aside>
<div class="gdpr-notice"><p>{esc(ui["cookie"])}</p><button class="gdpr-accept">{esc(ui["accept"])}</button> <button class="gdpr-more">{esc(ui["decline"])}</button></div>
<footer id="site-footer"><p class="copyright">&copy; {c["year"]} {esc(c["site"])}</p><nav class="legal-links">{" &middot; ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for t, h in _footer_links(c))}</nav></footer>
</div>
</body>
</html>
"""


def layout_portal(c: dict) -> str:
    ui = c["ui"]
    comments = "\n".join(
        f'<div class="media"><div class="media-body"><h5 class="mt-0">{esc(n)}</h5>{esc(t)}</div></div>'
        for n, t in c["comments"])
    return _head(c) + f"""<body class="portal">
<nav class="navbar portal-nav"><div class="container-fluid"><a class="navbar-brand" href="/">{esc(c["site"])}</a>
<ul class="navbar-nav">{_links(c["nav"], "nav-link")}</ul></div></nav>
<div class="container"><div class="row">
<div class="col-md-3"><aside class="left-col"><div class="card"><div class="card-header">{esc(ui["related"])}</div><ul class="list-group">{_links(c["related"], "list-group-item")}</ul></div>
<div class="card"><div class="card-header">{esc(ui["tags"])}</div><div class="card-body">{" ".join(f'<a class="badge" href="{esc(h)}">{esc(t)}</a>' for t, h in c["tags"])}</div></div></aside></div>
<div class="col-md-9"><main role="main">
<article class="content-item">
<h1 class="display-title">{esc(c["headline"])}</h1>
<p class="text-muted small">{esc(c["author"])} &bull; {c["date"]}</p>
{_paras(c)}
</article>
<div class="discussion"><h4>{esc(ui["comments"])}</h4>
{comments}</div>
</main></div>
</div></div>
<div class="consent-bar fixed-bottom" role="dialog"><span>{esc(ui["cookie"])}</span> <button class="btn btn-primary">{esc(ui["accept"])}</button></div>
<footer class="portal-footer"><div class="container"><ul class="list-inline">{_links(_footer_links(c), "list-inline-item")}</ul>
<small>&copy; {c["year"]} {esc(c["site"])}. {esc(ui["rights"])}</small></div></footer>
</body>
</html>
"""


LAYOUTS = {"classic": layout_classic, "leftbar": layout_leftbar, "magazine": layout_magazine,
           "blog": layout_blog, "portal": layout_portal}


def topic_label(lang: str, topic: str) -> str:
    if lang == "en":
        return lx.EN_TOPICS[topic]["label"]
    name = lx.OTHER_LANGS[lang]["topics"][topic][0]
    return name[0] if isinstance(name, tuple) else name


def render_article(site_index: int, article: dict, url: str, charset: str,
                   rng: random.Random) -> str:
    """A complete HTML page for `article` on site `site_index`: menus, sidebar, comments..."""
    site, lang = SITES[site_index], article["language"]
    topic = article["topic"]
    related = [(lx.make_title(lang, topic, rng), f"/{topic}/related-{rng.randrange(10**6)}.html")
               for _ in range(rng.randint(3, 5))]
    tag_words = [topic_label(lang, topic)] + rng.sample(
        lx.EN_TOPICS[topic]["nouns"] if lang == "en" else lx.OTHER_LANGS[lang]["topics"][topic][1], 2)
    tags = [(t, "/tag/" + slugify(t, "tag")) for t in tag_words]
    comments = [(rng.choice(lx.COMMENTERS), rng.choice(lx.COMMENTS[lang]))
                for _ in range(rng.randint(1, 4))]
    year = rng.randint(2019, 2024)
    ctx = {"lang": lang, "charset": charset, "site": site["name"], "layout": site["layout"],
           "url": url, "title": article["title"], "headline": article["title"],
           "paragraphs": article["paragraphs"], "ui": lx.UI[lang], "nav": nav_links(site_index, lang),
           "related": related, "tags": tags, "comments": comments,
           "author": rng.choice(lx.AUTHORS), "year": year,
           "date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
           "topic": topic, "topic_label": topic_label(lang, topic)}
    return LAYOUTS[site["layout"]](ctx)


# ---------------------------------------------------------------------------------------------
# Spam and junk pages (deliberately thin, repetitive or meaningless).
# ---------------------------------------------------------------------------------------------

def _spam_html(title: str, lines: list[str], keywords: str = "") -> str:
    meta = f'<meta name="keywords" content="{esc(keywords)}">\n' if keywords else ""
    body = "\n".join(f"<p>{esc(line)}</p>" for line in lines)
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f'{meta}</head>\n<body>\n<h1>{esc(title)}</h1>\n<div class="content">\n{body}\n</div>\n'
            f'</body>\n</html>\n')


def make_spam(kind: str, rng: random.Random) -> tuple[str, list[str], str | None, str]:
    """(title, body lines, language, keywords) for one junk page of `kind`."""
    if kind == "spam_keywords":
        kw = rng.choice(lx.SPAM_KEYWORDS)
        lines = []
        for _ in range(rng.randint(6, 14)):
            bits = [kw if rng.random() < 0.5 else rng.choice(lx.SPAM_FILLERS)
                    for _ in range(rng.randint(8, 16))]
            lines.append(" ".join(bits))
        title = f"{kw.title()} - best {kw} - cheap {kw} online"
        return title, lines, "en", ", ".join([kw] * 12)
    if kind == "spam_repeated_lines":
        chosen = rng.sample(lx.SPAM_LINES, rng.randint(1, 3))
        return chosen[0], chosen * rng.randint(15, 40), "en", ""
    if kind == "spam_short":
        text = rng.choice(lx.SHORT_PAGES)
        return text.rstrip("."), [text], "en", ""
    if kind == "spam_filler":
        lines = []
        for _ in range(rng.randint(3, 7)):
            sentences = []
            for _ in range(rng.randint(3, 6)):
                words = [lx.filler_word(rng) for _ in range(rng.randint(6, 14))]
                sentences.append(lx.capitalize_first(" ".join(words)) + ".")
            lines.append(" ".join(sentences))
        title = lx.capitalize_first(" ".join(lx.filler_word(rng) for _ in range(3)))
        return title, lines, None, ""
    # spam_symbols: tables of numbers and punctuation with no words at all
    symbols = ["#", "$", "%", "@", "&", "*", "|", "+", "=", "~", "^", ">>", "<<", "::"]
    lines = []
    for _ in range(rng.randint(8, 20)):
        bits = [rng.choice(symbols) * rng.randint(1, 3) if rng.random() < 0.5
                else str(rng.randint(0, 99999)) for _ in range(rng.randint(6, 14))]
        lines.append(" ".join(bits))
    return f"{rng.randint(100, 999)} ### {rng.randint(1000, 9999)}", lines, None, ""


# ---------------------------------------------------------------------------------------------
# Non-HTML payloads
# ---------------------------------------------------------------------------------------------

def tiny_png(rng: random.Random, size: int = 8) -> bytes:
    """A valid little PNG: a random-coloured gradient, built with zlib (no imaging library)."""
    r0, g0, b0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    # One filter byte (0 = none) then RGB triples per row.
    raw = b"".join(b"\x00" + b"".join(bytes(((r0 + 8 * x) % 256, (g0 + 8 * y) % 256, b0))
                                       for x in range(size))
                   for y in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def tiny_pdf(title: str) -> bytes:
    """A one-page PDF whose page says `title` (ASCII only)."""
    text = re.sub(r"[^A-Za-z0-9 ,.-]", "", title)[:60]
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# The page plan: which page is what, and its bytes.
# ---------------------------------------------------------------------------------------------

def plan_kinds(pages: int, rng: random.Random) -> list[str]:
    """Kinds of the `pages` HTML pages in crawl order: ~8% exact, ~8% near dups, ~10% junk.

    The first few are articles so every duplicate has an earlier original."""
    if pages < 20:
        raise ValueError(f"pages must be at least 20 to hold every kind of page, got {pages}")
    n_exact = max(1, round(pages * 0.08))
    n_near = max(2, round(pages * 0.08))
    n_spam = max(len(SPAM_KINDS), round(pages * 0.10))
    spam = [SPAM_KINDS[i % len(SPAM_KINDS)] for i in range(n_spam)]
    n_article = pages - n_exact - n_near - n_spam
    head = 6
    rest = ["article"] * (n_article - head) + ["exact_duplicate"] * n_exact + \
           ["near_duplicate"] * n_near + spam
    rng.shuffle(rest)
    return ["article"] * head + rest


def edit_article(article: dict, rng: random.Random) -> dict:
    """A near-duplicate: the same article with one or two small edits (sentence changed, added
    or dropped, or a word swapped). Near-dups stay >= 0.7 word-5-gram Jaccard to the source."""
    lang, topic = article["language"], article["topic"]
    src_text = lx.main_text(article)
    for attempt in range(20):
        paras = list(article["paragraphs"])
        ops = ["replace", "add", "swap", "drop"] if attempt < 10 else ["swap"]
        for op in rng.sample(ops, 1 if attempt >= 10 else rng.randint(1, 2)):
            i = rng.randrange(len(paras))
            sentences = re.split(r"(?<=[.!?])\s+", paras[i])
            j = rng.randrange(len(sentences))
            if op == "replace":
                sentences[j] = fresh_sentence(lang, topic, " ".join(paras), rng)
            elif op == "add":
                sentences.insert(j, fresh_sentence(lang, topic, " ".join(paras), rng))
            elif op == "drop" and len(sentences) > 1:
                del sentences[j]
            else:
                words = sentences[j].split()
                k = rng.randrange(len(words))
                bank = lx.EN_ADJS if lang == "en" else (lx.OTHER_LANGS[lang]["adjs"] or
                                                        lx.OTHER_LANGS[lang]["times"])
                words[k] = rng.choice(bank)
                sentences[j] = " ".join(words)
            paras[i] = " ".join(sentences)
        edited = dict(article, paragraphs=paras)
        text = lx.main_text(edited)
        if text != src_text and five_gram_jaccard(text, src_text) >= 0.75:
            return edited
    raise RuntimeError("could not make a near-duplicate")  # not reached with these settings


def fresh_sentence(lang: str, topic: str, text: str, rng: random.Random) -> str:
    """A new sentence whose opening words are not already in `text` (an edit that repeats a
    sentence of the article would look like a template artefact, not an editor's change)."""
    for _ in range(20):
        s = lx.make_sentence(lang, topic, rng)
        if " ".join(s.split()[:4]) not in text:
            break
    return s


def build_pages(pages: int, rng: random.Random) -> list[dict]:
    """Every HTML page: kind, url, language, duplicate_of, main_text, body bytes, content type."""
    kinds = plan_kinds(pages, rng)
    specs: list[dict] = []
    fact_no = 0
    originals, nears = [], []
    n_art = 0
    for page_no, kind in enumerate(kinds):
        if kind == "article":
            # The first articles after the first cover every language (and legacy charsets).
            forced = {1: "de", 2: "fr", 3: "es", 4: "ru"}.get(n_art)
            lang = forced or rng.choices(list(LANG_WEIGHTS), list(LANG_WEIGHTS.values()))[0]
            n_art += 1
            fact = None
            if lang == "en" and (fact_no < len(lx.FACTS) or rng.random() < 0.3):
                fact = lx.FACTS[fact_no % len(lx.FACTS)]
                fact_no += 1
            article = lx.make_article(lang, rng, fact=fact)
            site_index = rng.randrange(len(SITES))
            if lang in LEGACY_CHARSETS and (forced in ("de", "ru") or rng.random() < 0.25):
                charset = rng.choice(LEGACY_CHARSETS[lang])
            else:
                charset = "utf-8"
            host = site_host(SITES[site_index], lang)
            url = f"https://{host}/{article['topic']}/{slugify(article['title'], 'post')}-{page_no}.html"
            spec = page_spec(kind, url, article, site_index, charset, None, rng)
            originals.append(spec)
        elif kind == "exact_duplicate":
            src = rng.choice(originals)
            url = exact_dup_url(src["url"], page_no, rng)
            spec = dict(src, kind=kind, url=url, duplicate_of=src["url"])
        elif kind == "near_duplicate":
            # At least one chain A -> B -> C, so dedup must resolve clusters transitively.
            if nears and (len(nears) == 1 or rng.random() < 0.25):
                src = rng.choice(nears)
            else:
                src = rng.choice(originals)
            article = edit_article(src["article"], rng)
            site_index = rng.choice([i for i in range(len(SITES)) if i != src["site"]])
            host = site_host(SITES[site_index], article["language"])
            url = f"https://{host}/{article['topic']}/{slugify(article['title'], 'post')}-{page_no}.html"
            spec = page_spec(kind, url, article, site_index, "utf-8", src["url"], rng)
            nears.append(spec)
        else:
            title, lines, lang, keywords = make_spam(kind, rng)
            host = rng.choice(SPAM_HOSTS)
            url = f"https://{host}/p/{page_no}-{slugify(title, 'page')}.html"
            body = _spam_html(title, lines, keywords).encode("utf-8")
            spec = {"kind": kind, "url": url, "language": lang, "duplicate_of": None,
                    "main_text": "\n".join([title] + lines), "body": body,
                    "content_type": "text/html; charset=utf-8", "site": None, "article": None,
                    "server": "Apache"}
        specs.append(spec)
    return specs


def page_spec(kind: str, url: str, article: dict, site_index: int, charset: str,
              duplicate_of: str | None, rng: random.Random) -> dict:
    page = render_article(site_index, article, url, charset, rng)
    # Characters the legacy charset lacks become numeric references, as real CMSes do.
    body = page.encode(charset, errors="xmlcharrefreplace")
    return {"kind": kind, "url": url, "language": article["language"],
            "duplicate_of": duplicate_of, "main_text": lx.main_text(article), "body": body,
            "content_type": f"text/html; charset={charset}", "site": site_index,
            "article": article, "server": SITES[site_index]["server"]}


def exact_dup_url(url: str, page_no: int, rng: random.Random) -> str:
    """Another address serving the same bytes: tracking query, print view, www-less or mirror."""
    scheme_host, path = url.split("/", 3)[2], "/" + url.split("/", 3)[3]
    style = rng.randrange(4)
    if style == 0:
        return f"{url}?utm_source=newsletter&utm_medium=email&ref={page_no}"
    if style == 1:
        return f"https://{scheme_host}/print{path}?copy={page_no}"
    if style == 2:
        return f"http://{scheme_host.removeprefix('www.')}{path}?p={page_no}"
    return f"https://{rng.choice(MIRRORS)}/{page_no}/{scheme_host}{path}"


# ---------------------------------------------------------------------------------------------
# WARC writing
# ---------------------------------------------------------------------------------------------

def _truth(rec_id: str, warc_type: str, url: str, kind: str, language=None, duplicate_of=None,
           main_text=None, content_type=None) -> dict:
    return {"record_id": rec_id, "warc_type": warc_type, "url": url, "kind": kind,
            "language": language, "duplicate_of": duplicate_of, "main_text": main_text,
            "content_type": content_type}


def _path_of(url: str) -> str:
    rest = url.split("/", 3)
    return "/" + (rest[3] if len(rest) > 3 else "")


def _request_record(writer, url, when, rng, concurrent_to):
    host = url.split("/", 3)[2]
    headers = [("Host", host), ("User-Agent", USER_AGENT),
               ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
               ("Accept-Language", "en;q=0.9,*;q=0.5"), ("Connection", "close")]
    http = StatusAndHeaders(f"GET {_path_of(url)} HTTP/1.1", headers, is_http_request=True)
    rid = record_id(rng)
    return rid, writer.create_warc_record(url, "request", http_headers=http, warc_headers_dict={
        "WARC-Record-ID": rid, "WARC-Date": warc_date(when), "WARC-Concurrent-To": concurrent_to})


def _response_headers(body: bytes, content_type: str, server: str, when: dt.datetime) -> list:
    return [("Date", http_date(when)), ("Server", server), ("Content-Type", content_type),
            ("Content-Length", str(len(body))), ("Cache-Control", "max-age=600"),
            ("Connection", "close")]


def _response_record(writer, url, body, content_type, server, when, rid, status="200 OK"):
    http = StatusAndHeaders(status, _response_headers(body, content_type, server, when),
                            protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                     http_headers=http, warc_headers_dict={
                                         "WARC-Record-ID": rid, "WARC-Date": warc_date(when),
                                         "WARC-IP-Address": "192.0.2.%d" % (len(url) % 250 + 1)})


def write_exchange(writer, url, body, content_type, server, when, rng) -> tuple[str, str, str]:
    """Write request + response for `url`; return (request id, response id, payload digest)."""
    resp_id = record_id(rng)
    req_id, req = _request_record(writer, url, when, rng, resp_id)
    resp = _response_record(writer, url, body, content_type, server, when, resp_id)
    writer.write_record(req)
    writer.write_record(resp)
    return req_id, resp_id, resp.rec_headers.get_header("WARC-Payload-Digest")


def broken_record_bytes(rng: random.Random, when: dt.datetime) -> tuple[str, str, bytes]:
    """A response record whose gzip member is cut in half: its Content-Length promises more
    bytes than the file holds, and the gzip stream has no end. Readers must survive it."""
    url = f"https://www.{SITES[0]['slug']}.{SITES[0]['tld']}/travel/interrupted-download.html"
    article = lx.make_article("en", rng, topic="travel")
    page = render_article(0, article, url, "utf-8", rng).encode("utf-8")
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    rid = record_id(rng)
    writer.write_record(_response_record(writer, url, page, "text/html; charset=utf-8",
                                         SITES[0]["server"], when, rid))
    whole = buf.getvalue()
    return rid, url, whole[: len(whole) // 2]


def write_warc(path: Path, specs: list[dict], rng: random.Random) -> list[dict]:
    """Write the dump to `path`; return one truth row per record (warcinfo excluded)."""
    n = len(specs)
    extras: dict[int, list[str]] = {}
    n_extra = max(2, n // 100)
    for kind in ["png"] * n_extra + ["pdf"] * n_extra + ["metadata"] * n_extra:
        extras.setdefault(rng.randrange(n), []).append(kind)
    for _ in range(n_extra):  # revisits come late in the crawl, after their originals
        extras.setdefault(rng.randrange(n // 2, n), []).append("revisit")

    truth: list[dict] = []
    now = CRAWL_START
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        info = (b"software: gristmill demo generator 0.1\r\nformat: WARC File Format 1.0\r\n"
                b"description: synthetic web dump for the gristmill demo\r\n"
                b"robots: ignore\r\nisPartOf: gristmill-demo\r\n")
        writer.write_record(writer.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(info), length=len(info),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Record-ID": record_id(rng), "WARC-Date": warc_date(now),
                               "WARC-Filename": path.name.removesuffix(".tmp")}))
        written: list[tuple[dict, str, str, dt.datetime]] = []  # (spec, resp id, digest, when)
        for i, spec in enumerate(specs):
            now += dt.timedelta(seconds=rng.randint(2, 40))
            req_id, resp_id, digest = write_exchange(writer, spec["url"], spec["body"],
                                                     spec["content_type"], spec["server"], now, rng)
            truth.append(_truth(req_id, "request", spec["url"], "request"))
            truth.append(_truth(resp_id, "response", spec["url"], spec["kind"], spec["language"],
                                spec["duplicate_of"], spec["main_text"], spec["content_type"]))
            written.append((spec, resp_id, digest, now))
            for extra in extras.get(i, []):
                now += dt.timedelta(seconds=rng.randint(1, 20))
                truth.extend(write_extra(writer, extra, written, now, rng))
        now += dt.timedelta(seconds=5)
        rid, url, cut = broken_record_bytes(rng, now)
        f.write(cut)
        truth.append(_truth(rid, "response", url, "broken"))
    return truth


def write_extra(writer, extra: str, written: list, now: dt.datetime, rng) -> list[dict]:
    """An image, a PDF, a metadata record about the last page, or a revisit of an old page."""
    spec, resp_id, digest, when = written[-1]
    host = spec["url"].split("/", 3)[2]
    if extra in ("png", "pdf"):
        n = rng.randrange(10**5)
        if extra == "png":
            url, body, ctype = f"https://{host}/images/photo-{n}.png", tiny_png(rng), "image/png"
        else:
            title = spec["main_text"].split("\n")[0] if spec["main_text"] else "report"
            url, body, ctype = f"https://{host}/files/report-{n}.pdf", tiny_pdf(title), "application/pdf"
        req_id, r_id, _ = write_exchange(writer, url, body, ctype, spec["server"], now, rng)
        return [_truth(req_id, "request", url, "request"),
                _truth(r_id, "response", url, "non_html", content_type=ctype)]
    if extra == "metadata":
        fields = (f"via: https://{host}/\r\nhopsFromSeed: L\r\n"
                  f"fetchTimeMs: {rng.randint(40, 900)}\r\n"
                  f"outlink: https://{host}/feed.xml\r\n").encode()
        rid = record_id(rng)
        writer.write_record(writer.create_warc_record(
            spec["url"], "metadata", payload=io.BytesIO(fields), length=len(fields),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": warc_date(now),
                               "WARC-Concurrent-To": resp_id}))
        return [_truth(rid, "metadata", spec["url"], "metadata",
                       content_type="application/warc-fields")]
    # revisit: the same URL fetched again with an identical payload, stored as a reference only
    old = [w for w in written if w[0]["kind"] == "article"]
    spec, resp_id, digest, when = rng.choice(old)
    rid = record_id(rng)
    http = StatusAndHeaders("200 OK", _response_headers(spec["body"], spec["content_type"],
                                                        spec["server"], now), protocol="HTTP/1.1")
    rec = writer.create_revisit_record(spec["url"], digest, spec["url"], warc_date(when),
                                       http_headers=http,
                                       warc_headers_dict={"WARC-Record-ID": rid,
                                                          "WARC-Date": warc_date(now),
                                                          "WARC-Refers-To": resp_id})
    writer.write_record(rec)
    return [_truth(rid, "revisit", spec["url"], "revisit", content_type=spec["content_type"])]


def write_reference(path: Path, articles: int, rng: random.Random) -> int:
    """Clean English prose (never in the dump), one paragraph per line; returns the line count."""
    lines = []
    for i in range(articles):
        fact = lx.FACTS[i % len(lx.FACTS)] if rng.random() < 0.3 else None
        lines.extend(lx.make_article("en", rng, fact=fact)["paragraphs"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def count_truth(truth: list[dict]) -> dict:
    html_rows = [t for t in truth if t["main_text"] is not None]
    return {"kinds": dict(sorted(Counter(t["kind"] for t in truth).items())),
            "warc_types": dict(sorted(Counter(t["warc_type"] for t in truth).items())),
            "languages": dict(sorted(Counter(t["language"] or "none" for t in html_rows).items())),
            "charsets": dict(sorted(Counter(t["content_type"].split("charset=")[-1]
                                            for t in html_rows).items()))}
