"""Alignment: SFT, reward model, DPO family (and later PPO) on a base model, each a stage with its manifest."""
from gristmill.errors import GristmillError


class AlignError(GristmillError):
    """Alignment input or setting that cannot work as given; the message says what to change."""


def fmt(v: object, spec: str = ".4f") -> str:
    """A report cell: the number in `spec`, or n/a."""
    return "n/a" if v is None else format(v, spec)


def pct(v: object) -> str:
    """A report cell: a fraction as a percentage, or n/a."""
    return "n/a" if v is None else f"{100 * v:.1f} %"
