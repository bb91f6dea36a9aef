"""Alignment: SFT, reward model, DPO family (and later PPO) on a base model, each a stage with its manifest."""
from gristmill.errors import GristmillError


class AlignError(GristmillError):
    """Alignment input or setting that cannot work as given; the message says what to change."""
