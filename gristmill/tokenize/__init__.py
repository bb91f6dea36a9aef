"""Tokenize stage: byte-level BPE training and memory-mapped token shards with a document index."""
from gristmill.errors import GristmillError


class TokenizeError(GristmillError):
    """A tokenize input or setting that cannot work; the message says which and what to change."""


__all__ = ["TokenizeError"]
