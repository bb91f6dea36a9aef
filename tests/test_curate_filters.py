"""Per-document steps: extraction (time limit, failures), language ID (and its pre-extraction check),
and each heuristic filter's keep / drop with its reason string."""
from __future__ import annotations

import random
import threading
import time

import pytest
from curate_fixtures import english_paragraph, english_page, german_page
from datatrove.data import Document

import gristmill.curate.extract as extract_mod
from gristmill.curate.config import (C4Config, ExtractionConfig, FineWebConfig, GopherQualityConfig,
                                     GopherRepetitionConfig, HeuristicsConfig)
from gristmill.curate.extract import Extractor
from gristmill.curate.heuristics import Heuristics, OfflineWordTokenizer
from gristmill.curate.langid import (LanguageIdentifier, language_verdict, long_text_runs, prefilter_verdict)

GOOD = "\n".join(english_paragraph(random.Random(i)) for i in range(4))


def only(name: str, **kw) -> HeuristicsConfig:
    """A HeuristicsConfig with just one filter on."""
    return HeuristicsConfig(
        gopher_repetition=GopherRepetitionConfig(enabled=name == "gopher_repetition"),
        gopher_quality=GopherQualityConfig(enabled=name == "gopher_quality"),
        c4=C4Config(enabled=name == "c4", bad_words=kw.get("bad_words")),
        fineweb=FineWebConfig(enabled=name == "fineweb"))


def verdict(cfg: HeuristicsConfig, text: str) -> tuple[bool, str, str]:
    return Heuristics(cfg).apply(Document(text=text, id="t"))


def test_good_text_passes_every_filter():
    assert verdict(HeuristicsConfig(), GOOD) == (True, "", "kept")


@pytest.mark.parametrize("name, text, reason", [
    ("gopher_repetition", "\n".join(["The same line is repeated here, again and again."] * 6 + [GOOD]),
     "gopher_repetition:dup_line_frac"),
    ("gopher_repetition", "\n\n".join([GOOD[:400]] * 3), "gopher_repetition:dup_para_frac"),
    ("gopher_quality", "Too short to be a page.", "gopher_quality:gopher_short_doc"),
    ("gopher_quality", " ".join(f"#tag{i}" for i in range(80)) + " " + GOOD, "gopher_quality:gopher_too_many_hashes"),
    ("gopher_quality", " ".join(["garden window market teacher bridge"] * 20) + ".",
     "gopher_quality:gopher_enough_stop_words"),
    ("gopher_quality", " ".join(str(i) for i in range(1000, 1300)) + " " + GOOD[:200],
     "gopher_quality:gopher_below_alpha_threshold"),
    ("c4", GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4:lorem_ipsum"),
    ("c4", GOOD + "\nThe function body is { return x; } and that is all.", "c4:curly_bracket"),
    ("c4", "One sentence only here. And a second one.", "c4:too_few_sentences"),
    ("fineweb", "\n".join(f"menu item number {i} without stop" for i in range(20)), "fineweb:line_punct_ratio"),
    ("fineweb", "\n".join(["Short line."] * 3 + [f"Tiny {i}." for i in range(10)]), "fineweb:short_line_ratio"),
    ("fineweb", GOOD + "\n" + "\n".join(["This sentence is a duplicated line in the document, twice over."] * 2),
     "fineweb:char_dup_ratio"),
])
def test_each_filter_drops_with_its_reason(name, text, reason):
    keep, step, why = verdict(only(name), text)
    assert (keep, step, why) == (False, name, reason)
    assert verdict(only(name), GOOD)[0] is True  # the same filter keeps clean text


def test_c4_removes_javascript_lines_and_keeps_the_page():
    doc = Document(text=GOOD + "\nPlease enable JavaScript to view the comments.", id="j")
    keep, _, _ = Heuristics(only("c4")).apply(doc)
    assert keep and "JavaScript" not in doc.text and doc.text.startswith(GOOD[:50])


def test_bad_words_from_a_local_list(tmp_path):
    words = tmp_path / "bad.txt"
    words.write_text("grumblewort\nfoul phrase\n")
    cfg = only("none", bad_words=str(words))
    assert verdict(cfg, GOOD + " A grumblewort appears.") == (False, "c4_badwords",
                                                             "c4_badwords:document_removed_with_badwords")
    assert verdict(cfg, GOOD + " A foul phrase here.")[0] is False
    assert verdict(cfg, GOOD + " Grumbleworts are fine.")[0] is True  # whole words only


def test_offline_tokenizer_splits_like_spacy():
    tok = OfflineWordTokenizer()
    assert tok.word_tokenize("Don't stop... e-mail the U.S. team: $1.4 or 5,000!") == [
        "Don't", "stop", "...", "e", "-", "mail", "the", "U.S.", "team", ":", "$", "1.4", "or", "5,000", "!"]
    assert tok.sent_tokenize("First one. Second one! Third?") == ["First one.", "Second one!", "Third?"]
    assert tok == OfflineWordTokenizer() and hash(tok) == hash(OfflineWordTokenizer())


# -- language ID -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lid():
    return LanguageIdentifier()


def test_language_id_with_the_bundled_model(lid):
    german = "Die Bibliothek der kleinen Stadt wurde im letzten Jahr renoviert und ist jetzt wieder geöffnet."
    french = "La bibliothèque de la petite ville a été rénovée l'année dernière et elle est de nouveau ouverte."
    (en, s_en), (de, s_de), (fr, _) = lid.predict([GOOD, german, french])
    assert (en, de, fr) == ("en", "de", "fr") and s_en > 0.8 and s_de > 0.8
    assert language_verdict("en", 0.9, ["en"], 0.65) == (True, "kept")
    assert language_verdict("de", 0.99, ["en"], 0.65) == (False, "language")
    assert language_verdict("en", 0.5, ["en"], 0.65) == (False, "language_score")
    assert lid.predict([]) == []


def test_prefilter_reads_long_text_runs_only(lid):
    page = ("<html><head><title>T</title><script>var x = 'Hallo Welt ' + 'lange Zeichenkette hier';</script></head>"
            "<body><nav>Startseite | Impressum</nav>" + german_page()[6:])
    runs = long_text_runs(page)
    assert runs.startswith("Die Bibliothek") and "Startseite" not in runs and "var x" not in runs
    lang, score = lid.predict([runs])[0]
    assert prefilter_verdict(lang, score, len(runs), ["en"], 0.95, 300) == (False, "language")
    en = long_text_runs(english_page(random.Random(3)))
    lang, score = lid.predict([en])[0]
    assert prefilter_verdict(lang, score, len(en), ["en"], 0.95, 300) == (True, "kept")
    assert prefilter_verdict("de", 0.99, 120, ["en"], 0.95, 300) == (True, "kept")  # too little text: no verdict


# -- extraction --------------------------------------------------------------------------------------

def test_extraction_keeps_the_article_and_drops_the_chrome():
    page = english_page(random.Random(5), "Walking notes")
    text, reason = Extractor(ExtractionConfig()).extract(page)
    assert reason is None
    assert english_paragraph(random.Random(5))[:60] in text.replace("\n", " ")
    assert "Copyright 2024" not in text


def test_extraction_failures_are_reasons(monkeypatch):
    ex = Extractor(ExtractionConfig(timeout=0.3))
    assert ex.extract("<html><body></body></html>") == (None, "extract_empty")

    def broken(html, options):
        raise ValueError("lxml exploded")

    monkeypatch.setattr(extract_mod, "_call_trafilatura", broken)
    assert Extractor(ExtractionConfig()).extract("<p>x</p>") == (None, "extract_error")

    def spin(html, options):  # burns CPU: the SIGPROF timer measures CPU seconds
        end = time.process_time() + 30
        while time.process_time() < end:
            pass

    monkeypatch.setattr(extract_mod, "_call_trafilatura", spin)
    t0 = time.monotonic()
    assert Extractor(ExtractionConfig(timeout=0.2)).extract("<p>slow</p>") == (None, "extract_timeout")
    assert time.monotonic() - t0 < 10


def test_identical_pages_are_extracted_once(monkeypatch):
    calls = []
    real = extract_mod._call_trafilatura

    def counting(html, options):
        calls.append(1)
        return real(html, options)

    monkeypatch.setattr(extract_mod, "_call_trafilatura", counting)
    ex = Extractor(ExtractionConfig())
    page = english_page(random.Random(7))
    first = ex.extract(page)
    assert ex.extract(page) == first and len(calls) == 1 and ex.reused == 1
    ex2 = Extractor(ExtractionConfig(reuse_identical=False))
    ex2.extract(page), ex2.extract(page)
    assert len(calls) == 3


def test_extraction_outside_the_main_thread_uses_the_sandbox():
    out = {}
    page = english_page(random.Random(8))

    def work():
        ex = Extractor(ExtractionConfig(timeout=20))
        out["r"] = ex.extract(page)
        ex.close()

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    text, reason = out["r"]
    assert reason is None and english_paragraph(random.Random(8))[:40] in text.replace("\n", " ")
