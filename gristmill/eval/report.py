"""The eval stage's report.md, its plot (each task's score against its random baseline) and the model card with model-index."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gristmill.manifests import Manifest, atomic_write_text


def _pm(v: dict[str, Any]) -> str:
    err = v.get("stderr")
    return f"{100 * v['value']:.1f} ± {100 * err:.1f}" if err is not None else f"{100 * v['value']:.1f}"


def table(tasks: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: task, metric, score ± stderr (points), n, random baseline, centred."""
    lines = ["| task | metric | score (%) | n | random baseline (%) | centred |", "| --- | --- | --- | --- | --- | --- |"]
    for name, v in tasks.items():
        c = v.get("centered")
        lines.append(f"| {name} | {v['metric']} | {_pm(v)} | {v['n']} | {100 * v['random_baseline']:.1f} | "
                     f"{'n/a' if c is None else f'{c:.3f}'} |")
    return lines


def write_report(path: Path, summary: dict[str, Any], timings: dict[str, float], config: Any) -> None:
    lines = [f"# eval: {summary['model']}", "", "![scores against the random baseline](results.png)", ""]
    lines += table(summary["tasks"]) + [""]
    core = summary.get("core")
    if core:
        lines += [f"**CORE** {core['value']:.4f} ± {core['stderr']:.4f} over {core['tasks']} of its {core['of']} tasks"
                  + (f" (files not given: {', '.join(summary['missing'])})" if summary.get("missing") else ""), ""]
    lines += ["Scores are means over the n examples with their standard error; centred = (score - baseline) / "
              "(1 - baseline), CORE is the mean of the CORE tasks' centred scores. The limit, shots and seed are in "
              "the manifest's config; samples.jsonl has every example's log-likelihoods or generation.", "",
              "| task | seconds | examples/s |", "| --- | --- | --- |"]
    for name, s in timings.items():
        n = summary["tasks"][name]["n"]
        lines.append(f"| {name} | {s:.1f} | {n / s if s else 0:.1f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_plot(path: Path, summary: dict[str, Any]) -> None:
    """Horizontal bars: each task's headline score with its 95 % interval, the random baseline as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    names = list(tasks)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ys = range(len(names))
    vals = [100 * tasks[n]["value"] for n in names]
    errs = [196 * (tasks[n]["stderr"] or 0) for n in names]
    ax.barh(ys, vals, xerr=errs, color="#4c72b0", alpha=0.85, capsize=2)
    ax.scatter([100 * tasks[n]["random_baseline"] for n in names], ys, marker="|", s=200, color="#c44e52",
               label="random baseline", zorder=3)
    ax.set_yticks(list(ys), [f"{n} ({tasks[n]['metric']})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (%), 95 % interval")
    ax.set_title(summary["model"], fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no matplotlib version: same bytes on every run
    plt.close(fig)


def model_index(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Hugging Face `model-index` results: one per task, its data set named by the task file, the headline metric
    (points) with its standard error; CORE as one more result."""
    from gristmill.manifests.card import model_index_result

    results = []
    for name, v in summary["tasks"].items():
        label = f"{v['metric']} ({v['shots']}-shot, n={v['n']})"
        err = v.get("stderr")
        results.append(model_index_result(name, v.get("file", name), [
            (label, round(100 * v["value"], 2), v["metric"]),
            *([(f"{v['metric']} standard error", round(100 * err, 2), "stderr")] if err is not None else [])]))
    core = summary.get("core")
    if core:
        results.append(model_index_result("core", "CORE (DCLM)", [
            (f"CORE ({core['tasks']} of {core['of']} tasks)", round(core["value"], 4), "core")]))
    return [r for r in results if r is not None]


def write_card(path: Path, summary: dict[str, Any], m: Manifest, *, model_folder: Path) -> Path:
    """card.md: the evaluated model's card (its folder's README.md, when it has one) with these results added to
    its `model-index` (its own held-out figures kept), ready to publish with the model. The model folder itself is
    never edited: its stage's manifest lists the card it wrote."""
    import yaml

    from gristmill.manifests.card import add_model_index_results, card_front_matter

    src = model_folder / "README.md"
    text = src.read_text(encoding="utf-8") if src.is_file() else ""
    front = card_front_matter(src) if text else {}
    body = re.sub(r"\A---\r?\n.*?\r?\n---\r?\n", "", text, count=1, flags=re.S) if front else text
    front = add_model_index_results(front, model_index(summary), summary["model"])
    if not body.strip():
        body = f"\n# {summary['model']}\n\nEvaluated by gristmill's eval stage (id {m.id}): see report.md.\n"
    atomic_write_text(path, "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body)
    return path
