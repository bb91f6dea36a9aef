"""Alignment: SFT, reward model, DPO family and RL (PPO, GRPO, RLOO) on a base model, each a stage with its manifest."""
from gristmill.errors import GristmillError


class AlignError(GristmillError):
    """Alignment input or setting that cannot work as given; the message says what to change."""


def fmt(v: object, spec: str = ".4f") -> str:
    """A report cell: the number in `spec`, or n/a."""
    return "n/a" if v is None else format(v, spec)


def pct(v: object) -> str:
    """A report cell: a fraction as a percentage, or n/a."""
    return "n/a" if v is None else f"{100 * v:.1f} %"


def samples_table(samples: list[dict], before: str, after: str) -> list[str]:
    """report.md lines: a markdown table of held-out prompts and the answers before and after training."""
    if not samples:
        return []
    cell = lambda t: " ".join(str(t).split()).replace("|", "\\|")[:200]  # noqa: E731 - one table row cell
    return (["## Samples (held-out prompts, greedy)", "", f"| prompt | {before} | {after} |", "| --- | --- | --- |"]
            + [f"| {cell(x['prompt'])} | {cell(x['before'])} | {cell(x['after'])} |" for x in samples] + [""])
