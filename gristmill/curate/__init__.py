"""Curation: a raw web dump -> clean, deduplicated documents, with a ledger that accounts for every record.

Modules: config (settings), readers, extract, langid, heuristics, perplexity, quality, dedup + minhash,
ledger, pipeline (datatrove blocks and jobs), finalize (the global step), executors, report, run
(`run_curate`), model_stages (the "reference-lm" / "quality-model" recipe stages), tools (CLI commands).
Nothing heavy is imported here.
"""
from gristmill.errors import GristmillError


class CurateError(GristmillError):
    """A curation input or setting that cannot be used as given; the message says what to change."""


__all__ = ["CurateError"]
