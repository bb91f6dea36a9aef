"""gristmill: from a web dump to an aligned small language model, one verified stage at a time."""

__version__ = "0.1.0"
