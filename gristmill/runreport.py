"""The run report: RUN_DIR/report.md and its plots, composed from the stage manifests alone (`gristmill report RUN_DIR`)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gristmill.manifests import MANIFEST_NAME, Manifest, ManifestError, read_manifest, resolve_input_path, sha256_file
from gristmill.stages import BUILTIN

REPORT_NAME = "report.md"
PLOTS_DIR = "report-plots"  # the report's PNGs, beside report.md; never taken for a stage
KIND_ORDER = [s.name for s in BUILTIN]  # pipeline order of the built-in stages: ties in the lineage order
SAMPLE_PROMPTS = 8  # rows of the sample-generation table
CELL_CHARS = 80  # an answer longer than this is cut in the table (the stage's samples.jsonl has it whole)
# A folder without manifest.json is named as an unfinished / failed stage when it is called like a stage, is empty
# or holds only gristmill's lock (a stage that failed early), or holds what a stage writes while it runs; never the
# report's own report-plots/, nor a folder a finished stage reads raw input from (RUN/data).
RUNNING_MARKS = ("checkpoints", "metrics.jsonl", "timings.jsonl", "tasks", "report.md")


@dataclass
class Stage:
    name: str  # the folder under the run: the recipe's step name (`grpo` may be a ppo stage)
    path: Path
    manifest: Manifest | None  # None: unfinished, failed, or unreadable (`problem` says which)
    problem: str | None = None

    @property
    def kind(self) -> str:
        return self.manifest.stage if self.manifest else "?"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.metrics if self.manifest else {}


def find_stages(run_dir: Path) -> tuple[list[Stage], list[Stage]]:
    """(finished stages in lineage order, folders that look like stages but have no readable manifest).

    Lineage order: a stage after every stage of this run it reads; among those free to go next, the built-in
    pipeline order of their kinds, then the time they finished (a recipe's order, e.g. ppo before grpo), then the
    folder name."""
    done: dict[str, Stage] = {}
    broken: list[Stage] = []
    pending: list[Path] = []
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        mp = d / MANIFEST_NAME
        if mp.is_file():
            try:
                done[d.name] = Stage(d.name, d, read_manifest(mp))
            except ManifestError as e:
                broken.append(Stage(d.name, d, None, f"manifest.json unreadable: {_rel_error(e, run_dir)}"))
        elif d.name != PLOTS_DIR:  # the report's own folder is never a stage, even while it is empty
            pending.append(d)
    data = _raw_input_folders(list(done.values()), run_dir)
    for d in pending:
        if d.name in KIND_ORDER or (d.name not in data and (any((d / mark).exists() for mark in RUNNING_MARKS)
                                                            or all(q.name.startswith(".") for q in d.iterdir()))):
            broken.append(Stage(d.name, d, None, "no manifest.json: unfinished or failed (re-run the recipe to "
                                                 "resume it, or see its log)"))
    broken.sort(key=lambda s: s.name)
    deps = {n: {up for up in _upstream(s, run_dir) if up in done and up != n} for n, s in done.items()}
    order: list[str] = []
    while len(order) < len(done):
        free = [n for n in done if n not in order and deps[n] <= set(order)]
        if not free:  # a cycle only a hand-edited manifest makes: keep the rest in name order
            free = [n for n in done if n not in order]
        order.append(min(free, key=lambda n: (_kind_rank(done[n].kind), done[n].manifest.created, n)))
    return [done[n] for n in order], broken


def _raw_input_folders(stages: list[Stage], run_dir: Path) -> set[str]:
    """Folder names under run_dir that hold a raw input of a finished stage (RUN/data): data, not stages, whatever
    else they hold (a `tasks/` or `report.md` of the user's)."""
    top = run_dir.resolve()
    out = set()
    for s in stages:
        for rec in s.manifest.inputs:
            if rec.stage is None:
                rel = resolve_input_path(s.path, rec).resolve()
                if rel != top and rel.is_relative_to(top):
                    out.add(rel.relative_to(top).parts[0])
    return out


def _rel_error(e: Exception, run_dir: Path) -> str:
    """An error message without the run's absolute path, so the report reads the same wherever the run lies."""
    return str(e).replace(str(run_dir.resolve()) + "/", "").replace(str(run_dir) + "/", "")


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _upstream(s: Stage, run_dir: Path) -> list[str]:
    """Folder names (under run_dir) of the stages this one read."""
    out = []
    for rec in s.manifest.inputs:
        if rec.stage is None:
            continue
        target = resolve_input_path(s.path, rec)
        folder = target.parent if target.name == MANIFEST_NAME else target
        if folder.parent.resolve() == run_dir.resolve():
            out.append(folder.name)
    return out


# -- small formatting helpers: every cell says n/a rather than failing on a missing figure


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v: Any, spec: str = ".4f") -> str:
    """A number in `spec` (ints with thousands separators), or n/a."""
    if not _num(v):
        return "n/a" if v is None or isinstance(v, (int, float)) else str(v)
    return f"{v:,}" if isinstance(v, int) else format(v, spec)


def pct(v: Any) -> str:
    return f"{100 * v:.1f} %" if _num(v) else "n/a"


def arrow(a: Any, b: Any, fn: Callable[[Any], str] = num) -> str:
    return f"{fn(a)} → {fn(b)}"


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """Text as one markdown table cell: whitespace folded, pipes escaped, cut at `limit` characters."""
    t = " ".join(str(text).split())
    t = t if len(t) <= limit else t[:limit - 1] + "…"
    return t.replace("|", "\\|") or "(empty)"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows] + [""])


# -- reading what the manifests list


def metrics_rows(s: Stage, abandoned: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The stage's per-step log: the jsonl outputs of kind "metrics", by their paths inside the stage folder
    (so a copied run reads the same), the last row of each step. [] when the manifest lists none."""
    from gristmill.pretrain.plots import read_rows

    rows: list[dict[str, Any]] = []
    for o in s.manifest.outputs_of("metrics"):
        if o.path.endswith(".jsonl") and (s.path / o.path).is_file():
            rows += read_rows(s.path / o.path, abandoned=abandoned)
    return rows


def sample_answers(s: Stage) -> list[dict[str, Any]]:
    """Before / after answers on held-out prompts: the stage's samples.jsonl (every judged prompt), else the
    few shown in its manifest's metrics (runs made before samples.jsonl existed)."""
    rows: list[dict[str, Any]] = []
    for o in s.manifest.outputs_of("samples"):
        p = s.path / o.path
        if p.is_file():
            rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows or list(s.metrics.get("samples") or [])


# -- plots, in the style of pretrain/plots.py (Agg, grid at alpha 0.3, written atomically)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    from gristmill.manifests import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_funnel(funnel: list[dict[str, Any]], path: Path, title: str) -> None:
    """Documents (bars) and bytes (line, right axis) left after each curation step."""
    plt = _pyplot()
    steps = [str(r.get("step")) for r in funnel]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(steps)), [r.get("documents") or 0 for r in funnel], color="tab:blue", label="documents")
    ax.set_xticks(range(len(steps)), steps, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("documents")
    ax2 = ax.twinx()
    ax2.plot(range(len(steps)), [(r.get("bytes") or 0) / 1e6 for r in funnel], "o-", color="tab:orange", ms=4)
    ax2.set_ylabel("MB of text", color="tab:orange")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    _save(fig, path)


def plot_curves(series: list[tuple[str, list[tuple[str, list[float], list[float], str]]]], path: Path,
                title: str, xlabel: str) -> None:
    """One panel per (panel title, [(label, x, y, style)]), side by side; a panel with two or more lines gets a
    legend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.6), squeeze=False)
    for ax, (name, lines) in zip(axes[0], series):
        for label, xs, ys, style in lines:
            if xs:
                ax.plot(xs, ys, style, ms=3, lw=1, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(ax.lines) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def _xy(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if _num(r.get(key)) and r.get("action", "ok") == "ok"]
    return [p[0] for p in pts], [p[1] for p in pts]


# -- the sections: each returns report lines and writes its PNGs under plots/


@dataclass
class Ctx:
    run_dir: Path
    plots: Path
    stages: list[Stage]
    written: list[str]  # PNG names written this time (older ones are removed)

    def of(self, *kinds: str) -> list[Stage]:
        return [s for s in self.stages if s.kind in kinds]

    def png(self, name: str) -> Path:
        self.written.append(name)
        return self.plots / name

    def img(self, name: str, alt: str) -> str:
        return f"![{alt}]({PLOTS_DIR}/{name})"


def _missing(kind: str, what: str) -> list[str]:
    return [f"No finished `{kind}` stage in this run: no {what}.", ""]


def _stage_link(s: Stage) -> str:
    reports = [o.path for o in s.manifest.outputs_of("report")] if s.manifest else []
    return f"[{s.name}/{reports[0]}]({s.name}/{reports[0]})" if reports else "—"


def sec_stages(c: Ctx, broken: list[Stage]) -> list[str]:
    rows = [[f"`{s.name}`", s.kind, f"`{s.manifest.id}`", s.manifest.created, "finished", _stage_link(s)]
            for s in c.stages]
    rows += [[f"`{s.name}`", "?", "—", "—", f"**{s.problem}**", "—"] for s in broken]
    lines = ["## Stages", "", "In lineage order. Each stage's own report has the details; this one puts them side by "
             "side.", ""] + table(["folder", "stage", "id", "finished at (UTC)", "status", "stage report"], rows)
    missing = sorted({(s.name, up) for s in c.stages for up in _missing_upstream(s, c.run_dir)})
    lines += [f"- `{s}` read `{up}`, which is not a finished stage of this run any more." for s, up in missing]
    return lines + ([""] if missing else [])


def _missing_upstream(s: Stage, run_dir: Path) -> list[str]:
    return [up for up in _upstream(s, run_dir) if not (run_dir / up / MANIFEST_NAME).is_file()]


def sec_curate(c: Ctx) -> list[str]:
    lines = ["## Curation", ""]
    for s in c.of("reference-lm", "quality-model"):
        mt = s.metrics
        if s.kind == "quality-model":
            lines.append(f"- `{s.name}` (quality classifier): held-out accuracy {pct(mt.get('heldout_accuracy'))}, "
                         f"precision on reference text {pct(mt.get('heldout_precision_hq'))}.")
        else:
            lines.append(f"- `{s.name}` (reference LM): {num(mt.get('tokens'))} tokens, "
                         f"vocabulary {num(mt.get('vocab'))}.")
    if c.of("reference-lm", "quality-model"):
        lines.append("")
    curates = c.of("curate")
    if not curates:
        return lines + _missing("curate", "funnel")
    for s in curates:
        mt = s.metrics
        read, kept = mt.get("records_read"), mt.get("kept")
        dropped = {k: v for k, v in (mt.get("dropped") or {}).items() if _num(v)}  # reason -> records
        n_dropped = sum(dropped.values())
        lines += [f"### `{s.name}`", "",
                  f"Records read **{num(read)}**, kept **{num(kept)}** "
                  f"({pct(kept / read if _num(read) and _num(kept) and read else None)}), dropped **{num(n_dropped)}**; "
                  f"kept text {num(mt.get('documents_bytes'))} bytes.", ""]
        funnel = [r for r in mt.get("funnel") or [] if isinstance(r, dict)]
        if funnel:
            plot_funnel(funnel, c.png(f"{s.name}-funnel.png"), f"{s.name} {s.manifest.id}: documents after each step")
            lines += [c.img(f"{s.name}-funnel.png", "curation funnel"), ""]
            rows, prev = [], None
            for r in funnel:
                docs = r.get("documents")
                rows.append([str(r.get("step")), num(docs), num(prev - docs) if _num(prev) and _num(docs) else "",
                             num(r.get("bytes"))])
                prev = docs
            lines += table(["step", "documents left", "dropped here", "bytes left"], rows)
        top = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        if top:
            lines += [f"Top drop reasons ({len(top)} of {len(dropped)}):", ""] + table(
                ["reason", "records", "share of dropped"], [[k, num(v), pct(v / n_dropped)] for k, v in top])
        ev = mt.get("evaluation") or {}
        if ev:
            lines += ["Against the dump's ground truth: " + ", ".join(
                f"{k.replace('_', ' ')} {pct(ev[k])}" for k in ("language_id_accuracy", "english_articles_kept",
                                                                 "spam_kept_share", "near_dup_precision",
                                                                 "near_dup_recall", "extraction_token_f1")
                if _num(ev.get(k))) + ".", ""]
    return lines


def sec_tokenize(c: Ctx) -> list[str]:
    lines = ["## Tokens", ""]
    toks = c.of("tokenize")
    if not toks:
        return lines + _missing("tokenize", "token counts")
    rows = []
    for s in toks:
        mt = s.metrics
        tk = mt.get("tokenizer") or {}
        rows.append([f"`{s.name}`", num(mt.get("vocab_size")), str(tk.get("source", "n/a")), str(mt.get("dtype", "n/a")),
                     f"{num(mt.get('train_tokens'))} / {num(mt.get('train_documents'))}",
                     f"{num(mt.get('val_tokens'))} / {num(mt.get('val_documents'))}",
                     num(mt.get("bytes_per_token"), ".3f"), num(len(mt.get("shards") or {}))])
    return lines + table(["stage", "vocabulary", "tokenizer", "dtype", "train tokens / documents",
                          "val tokens / documents", "bytes per token", "shards"], rows)


def sec_pretrain(c: Ctx) -> list[str]:
    from gristmill.pretrain.plots import plot_training

    lines = ["## Pretraining", ""]
    pres = c.of("pretrain")
    if not pres:
        return lines + _missing("pretrain", "loss curves")
    for s in pres:
        mt = s.metrics
        model = mt.get("model") or {}
        lines += [f"### `{s.name}`", "",
                  f"{num(mt.get('params'))} parameters ({model.get('num_layers', '?')} layers, hidden "
                  f"{model.get('hidden_size', '?')}), {num(mt.get('steps'))} steps, {num(mt.get('tokens_seen'))} tokens "
                  f"seen on {mt.get('world_size', '?')} x {mt.get('device', '?')}.", ""]
        abandoned: list[dict[str, Any]] = []
        rows = metrics_rows(s, abandoned)
        if rows:
            plot_training(rows, s.manifest.events, c.png(f"{s.name}-training.png"), title=f"{s.name} {s.manifest.id}",
                          abandoned=abandoned)
            lines += [c.img(f"{s.name}-training.png", "pretraining loss, learning rate and gradient norm"), ""]
        lines += table(["metric", "value"], [
            ["final train loss (nats/token)", num(mt.get("final_train_loss"))],
            ["validation loss (nats/token)", num(mt.get("val_loss"))],
            ["validation perplexity", num(mt.get("val_perplexity"), ".3f")],
            ["spikes skipped / rollbacks / windows skipped",
             f"{num(mt.get('spikes_skipped'))} / {num(mt.get('rollbacks'))} / {num(mt.get('windows_skipped'))}"]])
        spikes = [e for e in s.manifest.events if e.get("kind") == "spike" or "action" in e]
        if spikes:
            lines += ["Spike events:", ""] + table(["step", "action", "reason"], [
                [num(e.get("step")), str(e.get("action", "")), cell(e.get("reason", e.get("detail", "")))] for e in spikes])
        else:
            lines += ["No spike events.", ""]
    return lines


def sec_sft(c: Ctx) -> list[str]:
    from gristmill.pretrain.plots import plot_training

    lines = ["## Supervised fine-tuning", ""]
    sfts = c.of("sft")
    if not sfts:
        return lines + _missing("sft", "SFT evaluation")
    for s in sfts:
        mt = s.metrics
        lines += [f"### `{s.name}`", ""]
        abandoned: list[dict[str, Any]] = []
        rows = metrics_rows(s, abandoned)
        if rows:
            plot_training(rows, s.manifest.events, c.png(f"{s.name}-training.png"), title=f"{s.name} {s.manifest.id}",
                          abandoned=abandoned, eval_key="eval_loss")
            lines += [c.img(f"{s.name}-training.png", "SFT loss, learning rate and gradient norm"), ""]
        lines += table(["held out", "base", "after SFT"], [
            ["eval loss (assistant tokens, nats/token)", num(mt.get("eval_loss_before")), num(mt.get("eval_loss"))],
            ["eval token accuracy", pct(mt.get("eval_token_accuracy_before")), pct(mt.get("eval_token_accuracy"))],
            [f"exact-answer accuracy ({num(mt.get('answers_checked'))} checkable, greedy)",
             pct(mt.get("answer_accuracy_before")), pct(mt.get("answer_accuracy"))]])
    return lines


def sec_reward(c: Ctx) -> list[str]:
    lines = ["## Reward model", ""]
    rms = c.of("reward")
    if not rms:
        return lines + _missing("reward", "reward model accuracy")
    rows = []
    for s in rms:
        mt = s.metrics
        rows.append([f"`{s.name}`", num(mt.get("pairs_eval")), pct(mt.get("eval_accuracy", mt.get("reward_accuracy"))),
                     num(mt.get("eval_margin"), ".3f"), num(mt.get("length_spearman"), "+.3f"),
                     f"{pct(mt.get('accuracy_chosen_shorter'))} of {num(mt.get('pairs_chosen_shorter'))}"])
    return lines + table(["stage", "held-out pairs", "accuracy", "mean margin", "Spearman(reward, length)",
                          "accuracy where chosen is shorter"], rows) + [
        "Length bias: a Spearman correlation far from 0 means the reward model scores length itself; the RL stages "
        "below can exploit it (compare their answer lengths).", ""]


def sec_dpo(c: Ctx) -> list[str]:
    lines = ["## Preference optimisation (DPO family)", ""]
    dpos = c.of("dpo")
    if not dpos:
        return lines + _missing("dpo", "DPO margins")
    rows = []
    for s in dpos:
        mt, cfg = s.metrics, s.manifest.config
        rows.append([f"`{s.name}`", str(mt.get("loss", cfg.get("loss", "?"))), num(cfg.get("beta"), "g"),
                     pct(mt.get("eval_accuracy")), num(mt.get("eval_margin"), ".3f"),
                     f"{num(mt.get('eval_reward_chosen'), '.3f')} / {num(mt.get('eval_reward_rejected'), '.3f')}",
                     f"{num(mt.get('eval_logp_chosen'), '.2f')} / {num(mt.get('eval_logp_rejected'), '.2f')}",
                     num(mt.get("kl_to_reference"), ".3f")])
        data = metrics_rows(s)
        if data:
            def both(key: str, label: str, color: str) -> list[tuple[str, list[float], list[float], str]]:
                # train: a line per step; eval: the held-out points, marked
                return [(f"train {label}", *_xy(data, f"train_{key}"), f"{color}-"),
                        (f"eval {label}", *_xy(data, f"eval_{key}"), f"{color}o--")]
            plot_curves([("reward margin (chosen - rejected)", both("margin", "margin", "b")),
                         ("sequence log-prob (nats)", both("logp_chosen", "chosen", "g")
                          + both("logp_rejected", "rejected", "r")),
                         ("pair accuracy", both("accuracy", "accuracy", "b"))],
                        c.png(f"{s.name}-preferences.png"), f"{s.name} {s.manifest.id}", "optimizer step")
    lines += table(["stage", "loss", "beta", "held-out accuracy", "margin", "implicit reward chosen / rejected",
                    "log-prob chosen / rejected", "KL to reference (nats)"], rows)
    for s in dpos:
        if f"{s.name}-preferences.png" in c.written:
            lines += [c.img(f"{s.name}-preferences.png", f"{s.name} margins and log-probs"), ""]
    return lines


def sec_rl(c: Ctx) -> list[str]:
    lines = ["## Reinforcement learning (PPO / GRPO / RLOO)", ""]
    rls = c.of("ppo")
    if not rls:
        return lines + _missing("ppo", "RL curves")
    rows, panels = [], {"score (reward the policy optimises)": [], "KL to the reference (nats)": [],
                        "response length (tokens)": []}
    for s in rls:
        mt = s.metrics
        first, last = mt.get("first") or {}, mt.get("last") or {}
        rows.append([f"`{s.name}`", str(mt.get("advantage", "?")), str(mt.get("reward", "?")), num(mt.get("iterations")),
                     arrow(first.get("score"), last.get("score"), lambda v: num(v, ".3f")),
                     num(last.get("kl"), ".3f"), arrow(first.get("response_tokens"), last.get("response_tokens"),
                                                     lambda v: num(v, ".1f")), num(mt.get("kl_to_sft"), ".3f")])
        data = metrics_rows(s)
        for (name, key) in zip(panels, ("score", "kl", "response_tokens")):
            panels[name].append((s.name, *_xy(data, key), "-"))
    if any(xs for lines_ in panels.values() for _, xs, _, _ in lines_):
        plot_curves(list(panels.items()), c.png("rl.png"), "RL stages", "iteration")
        lines += [c.img("rl.png", "RL score, KL and response length"), ""]
    lines += table(["stage", "advantage", "reward", "iterations", "score first → last", "KL last",
                    "response tokens first → last", "KL to SFT, held out"], rows)
    for s in rls:
        if s.metrics.get("length_hacking_warning"):
            lines += [f"- **`{s.name}`: {cell(s.metrics['length_hacking_warning'], 400)}**"]
    return lines + ([""] if any(s.metrics.get("length_hacking_warning") for s in rls) else [])


def sec_versus_sft(c: Ctx) -> list[str]:
    lines = ["## Aligned models against SFT", "",
             "Each aligned stage judged its own held-out prompts, greedy answers of the SFT model (before) and of the "
             "aligned model (after): the reward model's win rate with its 95 % interval (ties count half: an unchanged "
             "answer is a tie), the same over the prompts whose new "
             "answer is not longer, and the exact-answer accuracy on checkable tasks.", ""]
    rows = []
    for s in c.of("sft"):
        mt = s.metrics
        rows.append([f"`{s.name}` (vs base)", "—", "—", "—", "—", "—",
                     f"{arrow(mt.get('answer_accuracy_before'), mt.get('answer_accuracy'), pct)} "
                     f"({num(mt.get('answers_checked'))})", "—", "—", "—"])
    aligned = c.of("dpo", "ppo")
    for s in aligned:
        mt = s.metrics
        ci = mt.get("win_rate_ci")
        rows.append([f"`{s.name}` ({s.kind})", num(mt.get("judged_prompts")),
                     pct(mt.get("win_rate")) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else ""),
                     pct(mt.get("win_rate_not_longer")), arrow(mt.get("reward_before"), mt.get("reward_after"),
                                                               lambda v: num(v, ".3f")),
                     arrow(mt.get("answer_tokens_before"), mt.get("answer_tokens_after"), lambda v: num(v, ".1f")),
                     f"{arrow(mt.get('answer_accuracy_before'), mt.get('answer_accuracy'), pct)} "
                     f"({num(mt.get('answers_checked'))})",
                     arrow(mt.get("sampled_accuracy_before"), mt.get("sampled_accuracy"), pct)
                     if "sampled_accuracy" in mt else "—",
                     num(mt.get("kl_to_sft", mt.get("kl_to_reference")), ".3f"),
                     f"{num(mt.get('changed_answers'))} ({pct(mt.get('win_rate_changed'))})"
                     if mt.get("changed_answers") is not None else "—"])
    if not aligned:
        lines += _missing("dpo` or `ppo", "aligned model to compare")
    return lines + table(["model", "judged prompts", "win rate vs SFT", "win rate, not longer",
                          "reward SFT → model", "answer tokens SFT → model", "checked accuracy SFT → model (n)",
                          "sampled accuracy SFT → model", "KL to SFT (nats)",
                          "changed answers (their win rate)"], rows)


def sec_samples(c: Ctx) -> list[str]:
    """Base -> SFT -> each aligned model on the same prompts, joined by prompt text across the stages' samples."""
    lines = ["## Sample generations", ""]
    cols: list[tuple[str, dict[str, tuple[str, bool | None]]]] = []  # (column, prompt -> (answer, correct))
    expected: dict[str, str] = {}
    order: list[str] = []

    def note(prompt: str, r: dict[str, Any]) -> None:
        if prompt not in order:
            order.append(prompt)
        if r.get("answer") is not None:
            expected.setdefault(prompt, str(r["answer"]))

    base: dict[str, tuple[str, bool | None]] = {}
    sft: dict[str, tuple[str, bool | None]] = {}
    for s in c.of("sft"):
        for r in sample_answers(s):
            note(r["prompt"], r)
            base.setdefault(r["prompt"], (r["before"], r.get("correct_before")))
            sft.setdefault(r["prompt"], (r["after"], r.get("correct_after")))
    aligned = []
    for s in c.of("dpo", "ppo"):
        col: dict[str, tuple[str, bool | None]] = {}
        for r in sample_answers(s):
            note(r["prompt"], r)
            col.setdefault(r["prompt"], (r["after"], r.get("correct_after")))
            # the judged "before" is the SFT model's greedy answer: it fills SFT where the SFT stage had no such prompt
            sft.setdefault(r["prompt"], (r["before"], r.get("correct_before")))
        aligned.append((s.name, col))
    cols = [("base", base), ("SFT", sft)] + aligned
    if not order:
        return lines + ["No stage recorded sample answers (samples.jsonl or the manifest's `samples`).", ""]
    filled = {p: sum(p in col for _, col in cols) for p in order}
    chosen = sorted(order, key=lambda p: (-filled[p], order.index(p)))[:SAMPLE_PROMPTS]
    lines += [f"Greedy answers to the same held-out prompts, joined by prompt across the stages' samples "
              f"({len(order)} prompts recorded; the {len(chosen)} shown are those most stages answered). "
              "✓ / ✗: checked against the expected answer; — : that stage did not answer this prompt.", ""]

    def show(col: dict[str, tuple[str, bool | None]], p: str) -> str:
        if p not in col:
            return "—"
        text, ok = col[p]
        return cell(text) + ("" if ok is None else " ✓" if ok else " ✗")

    return lines + table(["prompt", "expected"] + [n for n, _ in cols],
                         [[cell(p), cell(expected.get(p, "")) if p in expected else "—"] + [show(col, p) for _, col in cols]
                          for p in chosen])


def sec_lineage(c: Ctx) -> list[str]:
    lines = ["## Lineage", "",
             "Every stage with its id and the sha256 of its manifest, what it read (a stage by id and the manifest hash "
             "it checked, a raw input by path and hash) and its outputs' hashes. Raw paths are as the manifests record "
             "them, relative to the stage folder.", ""]
    for s in c.stages:
        m = s.manifest
        lines += [f"- **`{s.name}`** ({m.stage}) id `{m.id}` · manifest sha256 `{sha256_file(s.path / MANIFEST_NAME)}`"
                  f" · gristmill {m.software.get('gristmill', '?')} at `{str(m.software.get('git_commit', '?'))[:12]}`"]
        for rec in m.inputs:
            if rec.stage is not None:
                target = resolve_input_path(s.path, rec)
                mp = target if target.name == MANIFEST_NAME else target / MANIFEST_NAME
                now = sha256_file(mp) if mp.is_file() else None
                state = ("" if now == rec.sha256 else " **(missing now)**" if now is None
                         else f" **(changed since: now `{now}`)**")
                lines.append(f"  - {rec.role}: stage `{rec.stage}` id `{rec.id}` at `{rec.path}`, manifest sha256 "
                             f"`{rec.sha256}`{state}")
            else:
                lines.append(f"  - {rec.role}: raw `{rec.path}` sha256 `{rec.sha256}` ({num(rec.bytes)} bytes)")
        lines += ["  <details><summary>" + f"{len(m.outputs)} outputs</summary>", ""]
        lines += [f"  - `{o.path}` {o.kind} {num(o.bytes)} bytes sha256 `{o.sha256}`" for o in m.outputs]
        lines += ["", "  </details>"]
    return lines + [""]


def sec_ablation(c: Ctx) -> list[str]:
    """`gristmill ablate`'s verdict (its manifest's metrics), when the run has one; nothing otherwise."""
    lines: list[str] = []
    for s in c.of("ablate"):
        mt = s.metrics
        final = mt.get("final") or {}
        arms = ("curated", "raw")
        rows = [[what, *(num((final.get(a) or {}).get(key)) for a in arms)]
                for key, what in (("reference", "held-out clean reference"), ("curated_val", "curated val split"),
                                  ("raw_val", "raw val split"))]
        ev = mt.get("eval") or {}
        for t, v in (ev.get("curated") or {}).items():  # the recipe's base-model benchmarks on both arms
            raw = (ev.get("raw") or {}).get(t)
            pm = lambda x: f"{100 * x['value']:.1f} ± {100 * (x.get('stderr') or 0):.1f} %" if x else "—"  # noqa: E731
            rows.append([f"{t} ({v['metric']}, n={v['n']}, random {100 * v['random_baseline']:.1f} %)", pm(v), pm(raw)])
        plots = [o.path for o in s.manifest.outputs_of("plot")]
        lines += ["## Curation ablation", "", f"**{mt.get('verdict', 'no verdict recorded')}.**", "",
                  "The same model config, seed and token budget trained on the raw extracted text of the dump and on "
                  f"the curated text; validation loss in nats/token (lower is better). Details: {_stage_link(s)}.", ""]
        lines += table(["evaluated on", "curated model", "raw model"], rows)
        lines += [f"![validation loss of both arms against step]({s.name}/{p})" for p in plots] + ([""] if plots else [])
    return lines


def sec_eval(c: Ctx) -> list[str]:
    """Every evaluated model × every task: the eval stages' headline scores with their standard errors, the random
    baseline beside each task, CORE when it was run; a plot of the same."""
    evals = c.of("eval")
    if not evals:
        return ["## Benchmarks", ""] + _missing("eval", "benchmark scores")
    tasks: list[str] = []
    for s in evals:
        tasks += [t for t in s.metrics.get("tasks", {}) if t not in tasks]
    lines = ["## Benchmarks", "",
             "Each model scored by an eval stage on the same examples (the limit, shots and seed are in its manifest): "
             "score ± standard error in points; the random baseline is what guessing gets. CORE is the mean of the "
             "CORE tasks' centred scores (0 = chance, 1 = perfect) over the tasks whose files were given.", ""]
    base = {t: next(s.metrics["tasks"][t] for s in evals if t in s.metrics.get("tasks", {})) for t in tasks}
    # one row a task, one column a model: tasks outnumber models (CORE alone is up to 22)
    rows = [[t, base[t]["metric"], num(base[t]["n"]), f"{100 * base[t]['random_baseline']:.1f}"]
            + [(f"{100 * mt[t]['value']:.1f} ± {100 * (mt[t].get('stderr') or 0):.1f}" if t in mt else "—")
               for mt in (s.metrics.get("tasks", {}) for s in evals)] for t in tasks]
    cores = [s.metrics.get("core") for s in evals]
    if any(cores):
        rows.append(["**CORE** (centred, mean)", "core", "—", "0"]
                    + [f"{c['value']:.3f} ({c['tasks']}/{c['of']} tasks)" if c else "—" for c in cores])
    lines += table(["task", "metric", "n", "random (%)", *[f"`{s.name}`" for s in evals]], rows)
    lines += ["Models: " + "; ".join(f"`{s.name}` = {cell(s.metrics.get('model', s.name), 80)}" for s in evals), ""]
    _plot_eval(evals, tasks, c.png("benchmarks.png"))
    return lines + [c.img("benchmarks.png", "benchmark scores of every model"), ""]


def _plot_eval(evals: list[Stage], tasks: list[str], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) + 2), 3.8))
    width = 0.8 / len(evals)
    for k, s in enumerate(evals):
        mt = s.metrics.get("tasks", {})
        xs = [i + k * width for i, t in enumerate(tasks) if t in mt]
        ax.bar(xs, [100 * mt[t]["value"] for t in tasks if t in mt], width,
               yerr=[196 * (mt[t].get("stderr") or 0) for t in tasks if t in mt], capsize=2, label=s.name)
    for i, t in enumerate(tasks):
        b = next(s.metrics["tasks"][t]["random_baseline"] for s in evals if t in s.metrics.get("tasks", {}))
        ax.hlines(100 * b, i - 0.1, i + 0.9, colors="k", linestyles="dotted")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("score (%), 95 % interval; dotted: random")
    ax.legend(fontsize=7, ncol=min(len(evals), 5))
    _save(fig, path)


SECTIONS: list[tuple[str, Callable[[Ctx], list[str]]]] = [
    ("Curation", sec_curate), ("Tokens", sec_tokenize), ("Pretraining", sec_pretrain),
    ("Curation ablation", sec_ablation),
    ("Supervised fine-tuning", sec_sft), ("Reward model", sec_reward),
    ("Preference optimisation (DPO family)", sec_dpo), ("Reinforcement learning (PPO / GRPO / RLOO)", sec_rl),
    ("Aligned models against SFT", sec_versus_sft), ("Benchmarks", sec_eval), ("Sample generations", sec_samples),
    ("Lineage", sec_lineage),
]


def write_run_report(run_dir: str | Path) -> Path:
    """Compose RUN_DIR/report.md and its PNGs (RUN_DIR/report-plots/) from the manifests of the stage folders
    under RUN_DIR and the files they list; return the report's path. Nothing outside RUN_DIR is read and no
    absolute path is written, so a run copied elsewhere gives the same bytes."""
    from gristmill.manifests import atomic_write_text

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ManifestError(f"{run_dir}: no such run folder; give the --out folder of `gristmill run` or `gristmill demo`")
    stages, broken = find_stages(run_dir)
    if not stages and not broken:
        raise ManifestError(f"{run_dir}: no stage folders (RUN/<stage>/manifest.json) here; is it a run folder?")
    plots = run_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    c = Ctx(run_dir, plots, stages, [])
    lines = ["# Run report", "",
             f"{len(stages)} finished stage(s){f', {len(broken)} unfinished or failed' if broken else ''}. Composed "
             "from the stages' manifests and the files they list by `gristmill report RUN_DIR`; run it again to "
             "regenerate this page.", ""]
    lines += sec_stages(c, broken)
    for title, fn in SECTIONS:
        try:
            lines += fn(c)
        except (KeyError, TypeError, ValueError, OSError, ManifestError) as e:  # an odd manifest: say so, go on
            lines += [f"## {title}", "", f"This section could not be composed: {type(e).__name__}: "
                                         f"{_rel_error(e, run_dir)}", ""]
    for old in plots.glob("*.png"):
        if old.name not in c.written:
            old.unlink()
    path = run_dir / REPORT_NAME
    atomic_write_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path
