"""Boilerplate removal: HTML -> main text with trafilatura, under a per-page time limit.

A page that fails, runs over its limit or yields no text gets a reason ("extract_error",
"extract_timeout", "extract_empty") instead of text; the job never stops for one page.

Fast path first: trafilatura's `fast=True` (its own extractor, without the comparison against
readability and jusText) on every page, and its full path only where the fast result is poor: shorter
than `fallback_max_chars` and under `fallback_share` of the page's visible text (measured only for
such short results, from the HTML with regexes). That is where the comparison changes the output. On
trafilatura's 990-page evaluation set 4 % of the pages take the full path; F1 .9237 (full path on
every page: .9236) at 1.34-1.41x the full path's pages/s and 1.03-1.05x trafilatura fast=True's
(benchmarks/bench_extract.py). Both passes of a page share its one time limit.

The limit is measured in CPU seconds of this process (SIGPROF interval timer) when running in a
main thread, so a busy shared machine does not make borderline pages flip between runs; outside a
main thread (where signals cannot be used) datatrove's ExtractorSandbox enforces it in wall time.
"""
from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections import OrderedDict

from gristmill.curate.config import ExtractionConfig

_CACHE_ENTRIES = 2048  # identical pages remembered per task (bounded so memory stays flat)


class PageTimeout(Exception):
    """Raised inside trafilatura by the interval timer when a page runs over its limit."""


def _on_timer(signum, frame):  # pragma: no cover - exercised through extract()
    raise PageTimeout()


def trafilatura_options(cfg: ExtractionConfig) -> dict:
    """The keyword arguments passed to `trafilatura.extract` (plain text out)."""
    return dict(favor_precision=cfg.favor_precision, include_comments=cfg.include_comments,
                include_tables=cfg.include_tables, deduplicate=cfg.deduplicate, output_format="txt",
                with_metadata=False)


def prebuilt(kwargs: dict) -> dict:
    """`trafilatura.extract` keyword arguments with its settings object built once (instead of per page);
    the plain keyword arguments where this trafilatura has no such object."""
    try:
        from trafilatura.settings import Extractor as Settings

        return {"options": Settings(output_format=kwargs["output_format"], fast=kwargs.get("fast", False),
                                    precision=kwargs["favor_precision"], comments=kwargs["include_comments"],
                                    tables=kwargs["include_tables"], dedup=kwargs["deduplicate"],
                                    with_metadata=kwargs["with_metadata"])}
    except (ImportError, TypeError):  # pragma: no cover - older trafilatura
        return kwargs


def _call_trafilatura(html: str, options: dict) -> str | None:
    import trafilatura

    return trafilatura.extract(html, **options)


def visible_text_chars(html: str, limit: int) -> int:
    """Characters of text a browser would show (tags, scripts, styles, head stripped), counted up to
    about `limit` (reading stops there)."""
    from gristmill.curate.langid import text_runs

    return sum(len(r) + 1 for r in text_runs(html, max_chars=limit, min_run=1))


_MIN_PAGE_TEXT = 250  # a page with less visible text than this has nothing the full path could find


class Extractor:
    """`extract(html) -> (text, None)` or `(None, reason)`. One per task; reuse it for every page."""

    def __init__(self, cfg: ExtractionConfig):
        self.cfg = cfg
        self.options = trafilatura_options(cfg)
        self._full = prebuilt(self.options)
        self._fast = prebuilt(dict(self.options, fast=True))
        self._cache: OrderedDict[bytes, tuple[str | None, str | None]] = OrderedDict()
        self._sandbox = None
        self.reused = 0  # pages answered from the identical-page cache
        self.fallbacks = 0  # pages that took the full path after a poor fast result

    def is_poor(self, html: str, text: str | None) -> bool:
        """Whether a fast-path result is poor: shorter than fallback_max_chars and under fallback_share of
        the page's visible text (a page with under 250 characters of it never is)."""
        n = len(text.strip()) if text else 0
        if self.cfg.fallback_share <= 0 or n >= self.cfg.fallback_max_chars:
            return False
        need = max(n / self.cfg.fallback_share, _MIN_PAGE_TEXT)
        return visible_text_chars(html, int(need) + 1) > need

    def _text(self, html: str) -> str | None:
        """The main text of one page: the fast path, then the full path if the fast result is poor."""
        if not self.cfg.fast_first:
            return _call_trafilatura(html, self._full)
        text = _call_trafilatura(html, self._fast)
        if self.is_poor(html, text):
            self.fallbacks += 1
            full = _call_trafilatura(html, self._full)
            if full and full.strip():
                return full
        return text

    def extract(self, html: str) -> tuple[str | None, str | None]:
        key = None
        if self.cfg.reuse_identical:
            key = hashlib.blake2b(html.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.reused += 1
                return hit
        result = self._extract_limited(html)
        if key is not None:
            self._cache[key] = result
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return result

    def _extract_limited(self, html: str) -> tuple[str | None, str | None]:
        try:
            if threading.current_thread() is threading.main_thread():
                text = self._with_timer(html)
            else:
                text = self._with_sandbox(html)
        except (PageTimeout, TimeoutError):
            return None, "extract_timeout"
        except Exception:  # trafilatura / lxml on a hostile page: that page only
            return None, "extract_error"
        if text is None or len(text.strip()) < max(self.cfg.min_chars, 1):
            return None, "extract_empty"
        return text, None

    def _with_timer(self, html: str) -> str | None:
        # Keep any timer someone else armed (pytest-timeout uses ITIMER_REAL; we use ITIMER_PROF).
        old_handler = signal.signal(signal.SIGPROF, _on_timer)
        old_remaining, old_interval = signal.setitimer(signal.ITIMER_PROF, self.cfg.timeout)
        start = time.process_time()
        try:
            return self._text(html)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old_handler)
            if old_remaining > 0:
                left = max(old_remaining - (time.process_time() - start), 1e-3)
                signal.setitimer(signal.ITIMER_PROF, left, old_interval)

    def _with_sandbox(self, html: str) -> str | None:
        from datatrove.pipeline.extractors.base import ExtractorSandbox

        if self._sandbox is None:
            self._sandbox = ExtractorSandbox(timeout=self.cfg.timeout, warmup_text="")
        return self._sandbox.process_document(html, self._sandbox_fn)

    def _sandbox_fn(self, html: str) -> str | None:
        return self._text(html) if html else ""

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.__exit__(None, None, None)
            self._sandbox = None
        self._cache.clear()
