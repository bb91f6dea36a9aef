"""Synthetic curate inputs written into tmp_path: WARC/WET records with warcio, English/German pages."""
from __future__ import annotations

import io
import random
from pathlib import Path

EN_NOUNS = ("river garden window market teacher bridge winter letter village kitchen morning station library "
            "harbour meadow candle painter orchard lantern journey bakery museum violin ferry chapel quarry "
            "notebook bicycle tower cottage festival workshop lighthouse valley pharmacy theatre").split()
EN_VERBS = ("visited painted described repaired carried noticed remembered followed opened watched cleaned "
            "measured borrowed photographed admired sketched").split()
EN_ADJ = "quiet narrow sunny crowded ancient modest bright muddy famous hidden wooden distant".split()
SUBJECTS = ("my aunt", "the teacher", "our neighbour", "a young painter", "the old fisherman", "her brother",
            "nobody", "the children", "a tired traveller", "everyone in town", "my grandfather", "the new mayor")
LINKS = ("before lunch", "after the storm", "in early spring", "during the long winter", "on a rainy Sunday",
         "without telling anyone", "for the first time", "at dawn", "with great care", "while we waited")


def _sentence(rng: random.Random) -> str:
    x, y = rng.sample(EN_NOUNS, 2)
    kind = rng.randrange(4)
    subj, link = rng.choice(SUBJECTS), rng.choice(LINKS)
    if kind == 0:
        s = f"{subj} {rng.choice(EN_VERBS)} the {rng.choice(EN_ADJ)} {x} near the {y} {link}."
    elif kind == 1:
        s = f"{link.capitalize()}, {subj} {rng.choice(EN_VERBS)} {rng.randint(2, 90)} {x}s by the {y}."
    elif kind == 2:
        s = f"Why would {subj} have {rng.choice(EN_VERBS)} a {rng.choice(EN_ADJ)} {x} {link}?"
    else:
        s = f"It is said that {subj} once {rng.choice(EN_VERBS)} the {x} of a {rng.choice(EN_ADJ)} {y}."
    return s[0].upper() + s[1:]


def english_paragraph(rng: random.Random, sentences: int = 6) -> str:
    """Varied, well-formed English sentences (they pass the Gopher, C4 and FineWeb rules)."""
    return " ".join(_sentence(rng) for _ in range(sentences))


def english_page(rng: random.Random, title: str = "Notes", paragraphs: int = 4) -> str:
    body = "".join(f"<p>{english_paragraph(rng)}</p>\n" for _ in range(paragraphs))
    return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav>"
            f"<article><h1>{title}</h1>\n{body}</article><footer>Copyright 2024</footer></body></html>")


GERMAN = ("Die Bibliothek der kleinen Stadt wurde im letzten Jahr renoviert und ist jetzt wieder geöffnet. "
          "Viele Menschen kommen am Wochenende, um Bücher auszuleihen und in Ruhe zu lesen. "
          "Der Bürgermeister sagte, dass die Stadt auch in Zukunft in Bildung investieren möchte. ")


def german_page(title: str = "Nachrichten") -> str:
    body = "".join(f"<p>{GERMAN * 3}</p>" for _ in range(4))
    return f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>{body}</article></body></html>"


def write_warc(path: Path, records: list[dict], *, gz: bool = True, version: str = "WARC/1.0") -> list[int]:
    """records: dicts with type ('response' | 'request' | 'revisit' | 'metadata' | 'resource' | 'conversion'),
    url, and for responses payload (bytes) + content_type (+ status). Returns each record's byte offset."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    offsets = []
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz, warc_version=version)
        for r in records:
            offsets.append(f.tell())
            payload = r.get("payload", b"")
            http = None
            if r["type"] == "response":
                headers = [("Content-Type", r["content_type"])] if r.get("content_type") else []
                http = StatusAndHeaders(r.get("status", "200 OK"), headers, protocol="HTTP/1.1")
            elif r["type"] == "request":
                http = StatusAndHeaders(f"GET {r['url']} HTTP/1.1", [("Host", "example.com")], is_http_request=True)
            warc_headers = None
            if r["type"] == "conversion":
                from warcio.statusandheaders import StatusAndHeaders as SH

                warc_headers = SH("", [("WARC-Type", "conversion"), ("WARC-Target-URI", r["url"]),
                                       ("Content-Type", "text/plain")], protocol=version)
            rec = w.create_warc_record(r["url"], r["type"], payload=io.BytesIO(payload), http_headers=http,
                                       warc_headers=warc_headers,
                                       warc_content_type="text/plain" if r["type"] == "conversion" else None)
            w.write_record(rec)
    return offsets


def html_response(url: str, html: str, *, charset: str = "utf-8", status: str = "200 OK") -> dict:
    return {"type": "response", "url": url, "payload": html.encode(charset),
            "content_type": f"text/html; charset={charset}", "status": status}
