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


def plot_panels(path, rows: list[dict], panels: list[tuple[str, list[tuple[str, str, str]]]], *, title: str,
                xlabel: str, shape: tuple[int, int]) -> None:
    """A PNG of metric curves against rows' "step": panels = [(panel title, [(metric key, line style, label)])];
    a metric missing from every row draws nothing, a panel with two or more lines gets a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*shape, figsize=(5 * shape[1], 3.5 * shape[0] + 0.5))
    for ax, (name, lines) in zip(axes.flat, panels):
        for key, style, label in lines:
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        if len(ax.lines) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
