"""Extraction: fast path first, the full path only for a poor fast result; normal pages unchanged; the text scanner."""
from __future__ import annotations

import random

import pytest
from curate_fixtures import english_page, german_page

import gristmill.curate.extract as extract_mod
from gristmill.curate.config import ExtractionConfig
from gristmill.curate.extract import Extractor, visible_text_chars
from gristmill.curate.langid import _CHUNK, long_text_runs, text_runs


def recording(monkeypatch, ex: Extractor, fast_result=None) -> list[str]:
    """Record which path each trafilatura call takes; `fast_result` replaces the fast path's output."""
    calls: list[str] = []
    real = extract_mod._call_trafilatura

    def call(html, options):
        path = "fast" if options is ex._fast else "full"
        calls.append(path)
        if path == "fast" and fast_result is not None:
            return fast_result
        return real(html, options)

    monkeypatch.setattr(extract_mod, "_call_trafilatura", call)
    return calls


def test_a_normal_page_takes_the_fast_path_only(monkeypatch):
    ex = Extractor(ExtractionConfig())
    calls = recording(monkeypatch, ex)
    text, reason = ex.extract(english_page(random.Random(11), "Harbour notes"))
    assert reason is None and "Harbour notes" in text
    assert calls == ["fast"] and ex.fallbacks == 0


def test_a_poor_fast_result_takes_the_full_path(monkeypatch):
    page = english_page(random.Random(12), "Market day", paragraphs=6)
    full_text, _ = Extractor(ExtractionConfig(fast_first=False)).extract(page)
    ex = Extractor(ExtractionConfig())
    calls = recording(monkeypatch, ex, fast_result="Market day")  # the fast path found only the title
    text, reason = ex.extract(page)
    assert calls == ["fast", "full"] and ex.fallbacks == 1
    assert reason is None and text == full_text and len(text) > 2000


def test_a_short_result_that_is_most_of_the_page_is_not_poor(monkeypatch):
    page = ("<html><head><title>Hi</title></head><body><p>Opening hours: Monday to Friday, nine to five.</p>"
            "</body></html>")
    ex = Extractor(ExtractionConfig())
    calls = recording(monkeypatch, ex, fast_result="Opening hours: Monday to Friday, nine to five.")
    assert ex.extract(page)[0].startswith("Opening hours")
    assert calls == ["fast"]
    monkeypatch.undo()
    calls = recording(monkeypatch, ex)
    assert ex.extract("<html><body></body></html>") == (None, "extract_empty")  # nothing for the full path
    assert calls == ["fast"] and ex.fallbacks == 0


def test_poor_is_short_and_a_small_share_of_the_page():
    page = english_page(random.Random(13), paragraphs=6)
    ex = Extractor(ExtractionConfig())
    assert ex.is_poor(page, None) and ex.is_poor(page, "x" * 100)
    assert not ex.is_poor(page, "x" * 1000)  # fallback_max_chars: long enough whatever the page
    assert not Extractor(ExtractionConfig(fallback_share=0.0)).is_poor(page, None)
    assert not Extractor(ExtractionConfig(fallback_share=0.02)).is_poor(page, "x" * 100)  # page < 5000 chars


def test_fast_first_off_is_the_full_path_on_every_page(monkeypatch):
    ex = Extractor(ExtractionConfig(fast_first=False))
    calls = recording(monkeypatch, ex)
    ex.extract(english_page(random.Random(14)))
    assert calls == ["full"]


@pytest.mark.parametrize("page", [english_page(random.Random(s), paragraphs=p) for s, p in ((1, 2), (2, 5), (3, 8))]
                         + [german_page()])
def test_normal_pages_extract_as_before(page):
    """Where the fast path is kept, its text is what the full path (the old default) gives."""
    fast, _ = Extractor(ExtractionConfig()).extract(page)
    full, _ = Extractor(ExtractionConfig(fast_first=False)).extract(page)
    assert fast == full


def test_fallback_settings_are_checked():
    with pytest.raises(ValueError, match="fallback_share"):
        ExtractionConfig(fallback_share=1.5)
    with pytest.raises(ValueError, match="fallback_max_chars"):
        ExtractionConfig(fallback_max_chars=-1)


def test_text_runs_skip_head_scripts_and_comments_across_pieces():
    script = "var s = '" + "q" * (3 * _CHUNK) + "';"  # a script longer than one piece of HTML
    words = " ".join(f"word{i}" for i in range(400))
    page = (f"<html><head><title>Title here</title><style>p {{color: red}}</style></head><body>"
            f"<p>{'a' * (_CHUNK - 50)}</p><script>{script}</script><!-- {'c' * 70} -->"
            f"<p>Text after the script &amp; the comment</p><p>{words}</p></body></html>")
    runs = text_runs(page, max_chars=10**9)
    joined = " ".join(runs)
    assert "qqq" not in joined and "ccc" not in joined and "color" not in joined and "Title here" not in joined
    assert "Text after the script & the comment" in runs and joined.endswith("word399")
    assert visible_text_chars(page, 100) < visible_text_chars(page, 10**9)  # it stops reading near the limit
    assert visible_text_chars(page, 10**9) == sum(len(r) + 1 for r in runs)
    assert long_text_runs(page, max_chars=500) == ("a" * (_CHUNK - 50))[:500]
