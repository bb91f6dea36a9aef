"""Heuristic filters: datatrove's Gopher, C4, bad-words and FineWeb rules, offline, via their `filter()`.

The Gopher (quality + repetition), C4 (FineWeb's variant), C4 bad-words and FineWeb quality blocks
run through their own `filter()` methods.

datatrove splits words and sentences with spaCy or NLTK models, which are not installed here and
would need downloads. Each filter is therefore given `OfflineWordTokenizer` (datatrove accepts a
WordTokenizer in place of a language code): a regex tokenizer close to spaCy's blank-model output
(words, with runs of punctuation as their own tokens) and the sentence rule of datatrove's
WhitespaceTokenizer. It keeps punctuation as tokens, as spaCy and NLTK do, so Gopher's word ratios
mean what they mean with those tokenizers. Reasons are "<filter>:<datatrove reason>", e.g. "gopher_quality:gopher_short_doc".
"""
from __future__ import annotations

import re
from pathlib import Path

import regex

from gristmill.curate import CurateError
from gristmill.curate.config import HeuristicsConfig

from datatrove.pipeline.filters import (C4BadWordsFilter, C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.utils.text import TERMINAL_PUNCTUATION
from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize

# abbreviations (U.S.), numbers with separators (5,000 / 1.4), words (don't), a run of one punctuation mark
_WORD = regex.compile(r"(?:\p{L}\.){2,}|\d+(?:[.,:/]\d+)*\w*|\w+(?:['’]\w+)*|([^\w\s])\1*", regex.UNICODE)
_SENT = regex.compile(rf"(?:(?:\p{{Lu}}\.)|.)+?[{re.escape(''.join(sorted(TERMINAL_PUNCTUATION)))}\n]+[\"'”]?",
                      regex.UNICODE)


class OfflineWordTokenizer(WordTokenizer):
    """A datatrove WordTokenizer that needs no model download (see module docstring)."""

    def __init__(self) -> None:
        super().__init__("offline")

    # equal and hashable by type: datatrove caches tokenizers and split results keyed by it
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__qualname__)

    def word_tokenize(self, text: str) -> list[str]:
        return [m.group(0) for m in _WORD.finditer(text)]

    def sent_tokenize(self, text: str) -> list[str]:
        sents = [s.strip() for s in _SENT.findall(text)]
        return [s for s in sents if s]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        sents = self.sent_tokenize(text)
        if not sents:
            return [(0, len(text))]
        return list(simple_span_tokenize(text, sents))


def offline_tokenizer() -> OfflineWordTokenizer:
    return OfflineWordTokenizer()


def load_bad_words(path: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise CurateError(f"curate.heuristics.c4.bad_words={path}: no such file; give a local word list "
                          "(one word or phrase per line) or unset it")
    words = [w.strip().lower() for w in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    return sorted({w for w in words if w and not w.startswith("#")})


class LocalBadWordsFilter(C4BadWordsFilter):
    """datatrove's C4BadWordsFilter with its word list from a local file instead of a download."""

    def __init__(self, words: list[str]):
        super().__init__(keep_fraction=0.0, fail_on_missing_language=False, seed=0)
        # the pattern datatrove builds for space-separated languages: a listed word between non-word chars
        self.local_pattern = re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(re.escape(w) for w in words)))

    def _get_badwords(self, lang: str):  # one local list for every language
        return self.local_pattern


def build_filters(cfg: HeuristicsConfig) -> list[tuple[str, object]]:
    """(name, datatrove filter) in the order FineWeb applies them."""
    tok = offline_tokenizer()
    out: list[tuple[str, object]] = []
    g = cfg.gopher_repetition
    if g.enabled:
        out.append(("gopher_repetition", GopherRepetitionFilter(
            dup_line_frac=g.dup_line_frac, dup_para_frac=g.dup_para_frac, dup_line_char_frac=g.dup_line_char_frac,
            dup_para_char_frac=g.dup_para_char_frac, language=tok)))
    q = cfg.gopher_quality
    if q.enabled:
        out.append(("gopher_quality", GopherQualityFilter(
            min_doc_words=q.min_doc_words, max_doc_words=q.max_doc_words, min_avg_word_length=q.min_avg_word_length,
            max_avg_word_length=q.max_avg_word_length, max_symbol_word_ratio=q.max_symbol_word_ratio,
            max_bullet_lines_ratio=q.max_bullet_lines_ratio, max_ellipsis_lines_ratio=q.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=q.max_non_alpha_words_ratio, min_stop_words=q.min_stop_words,
            stop_words=list(q.stop_words), language=tok)))
    c = cfg.c4
    if c.enabled:
        out.append(("c4", C4QualityFilter(
            filter_no_terminal_punct=c.filter_no_terminal_punct, min_num_sentences=c.min_num_sentences,
            min_words_per_line=c.min_words_per_line, max_word_length=c.max_word_length,
            filter_lorem_ipsum=c.filter_lorem_ipsum, filter_javascript=c.filter_javascript,
            filter_curly_bracket=c.filter_curly_bracket, filter_policy=c.filter_policy, language=tok)))
    if c.bad_words:
        out.append(("c4_badwords", LocalBadWordsFilter(load_bad_words(c.bad_words))))
    f = cfg.fineweb
    if f.enabled:
        out.append(("fineweb", FineWebQualityFilter(
            line_punct_thr=f.line_punct_thr, line_punct_exclude_zero=f.line_punct_exclude_zero,
            short_line_thr=f.short_line_thr, short_line_length=f.short_line_length,
            char_duplicates_ratio=f.char_duplicates_ratio, new_line_ratio=f.new_line_ratio, language=tok)))
    return out


def run_filter(name: str, filt, doc) -> tuple[bool, str]:
    """One datatrove filter on one Document -> (keep, reason). C4 may shorten doc.text (it drops lines)."""
    try:
        res = filt.filter(doc)
    except (ZeroDivisionError, ValueError, IndexError) as e:  # e.g. a text with no words at all
        return False, f"{name}:error_{type(e).__name__}"
    if isinstance(res, tuple):
        keep, reason = res
        return bool(keep), f"{name}:{reason}" if not keep else "kept"
    return bool(res), "kept" if res else f"{name}:dropped"


class Heuristics:
    """All configured filters in order; `apply(doc) -> (keep, step, reason)`."""

    def __init__(self, cfg: HeuristicsConfig):
        self.filters = build_filters(cfg)

    @property
    def steps(self) -> list[str]:
        return [n for n, _ in self.filters]

    def apply(self, doc) -> tuple[bool, str, str]:
        for name, filt in self.filters:
            if not doc.text.strip():
                return False, name, f"{name}:empty"
            keep, reason = run_filter(name, filt, doc)
            if not keep:
                return False, name, reason
        return True, "", "kept"
