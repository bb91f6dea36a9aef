"""The training plot: loss (with validation), learning rate and gradient norm against step, spike events marked."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gristmill.manifests import atomic_open


def read_rows(path: Path, *, abandoned: list[dict[str, Any]] | None = None,
              with_timings: bool = False) -> list[dict[str, Any]]:
    """metrics.jsonl rows, keeping the last row of each step, by step. A rollback replays steps:
    the rows it superseded are appended to `abandoned` when given. with_timings: each row joined with its
    step's wall-clock fields from timings.jsonl beside it."""
    def last_rows(p: Path, abandoned: list[dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
        last: dict[int, dict[str, Any]] = {}
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                old = last.get(int(row["step"]))
                if old is not None and abandoned is not None:
                    abandoned.append(old)
                last[int(row["step"])] = row
        return last

    last = last_rows(path, abandoned)
    timings = Path(path).with_name("timings.jsonl")
    if with_timings and timings.is_file():
        for step, t in last_rows(timings, None).items():
            if step in last:
                last[step] = last[step] | t
    return [last[s] for s in sorted(last)]


def plot_training(rows: list[dict[str, Any]], events: list[dict[str, Any]], path: Path, *, title: str = "",
                  abandoned: list[dict[str, Any]] | None = None, eval_key: str = "eval_loss",
                  loss_unit: str = "nats/token") -> None:
    """Three panels sharing the step axis; `abandoned` rows (replaced after a rollback) are drawn faintly;
    `eval_key` names the held-out loss in the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str, source: list[dict[str, Any]] | None = None) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in (rows if source is None else source)
               if r.get(key) is not None and math.isfinite(r[key]) and r.get("action", "ok") == "ok"]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_loss, ax_lr, ax_gn) = plt.subplots(3, 1, figsize=(9, 8), sharex=True, height_ratios=[3, 1, 1.5])
    if abandoned:
        for ax, key in ((ax_loss, "loss"), (ax_lr, "lr"), (ax_gn, "grad_norm")):
            ax.plot(*series(key, abandoned), ".", ms=4, color="0.6",
                    label="rolled back" if ax is ax_loss else None)
    ax_loss.plot(*series("loss"), lw=1, color="tab:blue", label="train loss")
    vx, vy = series(eval_key)
    if vx:
        ax_loss.plot(vx, vy, "o-", ms=4, color="tab:green", label=eval_key.replace("_", " "))
    ax_lr.plot(*series("lr"), lw=1, color="tab:purple")
    ax_gn.plot(*series("grad_norm"), lw=1, color="tab:gray")
    if any(v > 0 for v in series("grad_norm")[1]):
        ax_gn.set_yscale("log")
    marked = set()
    for e in events:
        kind = e.get("action")
        color, style = {"skip": ("tab:orange", ":"), "rollback": ("tab:red", "--"), "stop": ("black", "-")}.get(
            kind, ("tab:red", "--"))
        label = None if kind in marked else f"spike: {kind}"
        marked.add(kind)
        for ax in (ax_loss, ax_lr, ax_gn):
            ax.axvline(e["step"], color=color, ls=style, lw=1, label=label if ax is ax_loss else None)
    ax_loss.set_ylabel(f"loss ({loss_unit})")
    ax_lr.set_ylabel("learning rate")
    ax_gn.set_ylabel("grad norm\n(before clip)")
    ax_gn.set_xlabel("optimizer step")
    ax_loss.legend(loc="upper right", fontsize=8)
    for ax in (ax_loss, ax_lr, ax_gn):
        ax.grid(alpha=0.3)
    if title:
        ax_loss.set_title(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
