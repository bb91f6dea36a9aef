"""The curate report: stats.json, funnel.png (documents and bytes after each step) and report.md;
with a ground truth given (the `truth` input role, e.g. the demo's truth.jsonl) also the measurements
against it: language-ID accuracy, near-duplicate precision/recall, share of spam kept, extraction token-F1.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from gristmill.manifests import atomic_open, atomic_write_json, atomic_write_text

_TOKENS = re.compile(r"\w+")


def token_f1(predicted: str, reference: str) -> float:
    """Bag-of-words F1 of lowercased word tokens (the usual extraction-quality measure)."""
    p = Counter(t.lower() for t in _TOKENS.findall(predicted or ""))
    r = Counter(t.lower() for t in _TOKENS.findall(reference or ""))
    if not p or not r:
        return float(not p and not r)
    overlap = sum((p & r).values())
    if overlap == 0:
        return 0.0
    prec, rec = overlap / sum(p.values()), overlap / sum(r.values())
    return 2 * prec * rec / (prec + rec)


def evaluate_against_truth(truth_path: Path, ledger_rows: list[dict], extracted: dict[str, str]) -> dict[str, Any]:
    """Compare the ledger (and extracted texts) with the generator's ground truth, record by record."""
    truth = {}
    with open(truth_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                t = json.loads(line)
                truth[t["record_id"]] = t
    rows = {r["id"]: r for r in ledger_rows}
    matched = [(truth[i], rows[i]) for i in truth if i in rows]
    by_url = {t["url"]: i for i, t in truth.items() if t.get("warc_type") == "response"}

    lang = [(t["language"], r["language"]) for t, r in matched if t.get("language") and r.get("language")]
    lang_acc = sum(a == b for a, b in lang) / len(lang) if lang else None
    # what was kept vs what should have been: English main-content pages, one copy each
    kept_lang = [(t["language"], r["kept"]) for t, r in matched if t.get("kind") == "article"]

    # the generator names a duplicate's original by URL; follow it to the first original of the cluster
    def root(i: str) -> str:
        seen = set()
        while truth[i].get("duplicate_of") and i not in seen:
            seen.add(i)
            i = by_url.get(truth[i]["duplicate_of"], i)
        return i

    flagged = {i for t, r in matched for i in [t["record_id"]] if r["reason"] == "near_duplicate"}
    dup_kinds = {"near_duplicate", "exact_duplicate"}
    true_pos = sum(1 for i in flagged if truth[i]["kind"] in dup_kinds)
    # recall over the true near duplicates that reached the near-dedup step together with another member
    # of their cluster (one whose original was dropped earlier, e.g. by perplexity, is rightly kept)
    at_near = Counter(root(t["record_id"]) for t, r in matched if r["kept"] or r["stage"] == "near_dedup")
    reached = [t["record_id"] for t, r in matched if t["kind"] == "near_duplicate"
               and (r["kept"] or r["stage"] == "near_dedup") and at_near[root(t["record_id"])] >= 2]
    found = sum(1 for i in reached if i in flagged)
    exact_reached = [t["record_id"] for t, r in matched if t["kind"] == "exact_duplicate"
                     and (r["kept"] or r["stage"] in ("exact_dedup", "near_dedup"))]
    exact_found = sum(1 for i in exact_reached if rows[i]["reason"] in ("exact_duplicate", "near_duplicate"))

    # a flagged duplicate points at a document of its own true cluster (same first original)
    same_cluster = [root(i) == root(rows[i]["duplicate_of"]) for i in flagged
                    if truth[i]["kind"] in dup_kinds and rows[i].get("duplicate_of") in truth]
    spam = [r["kept"] for t, r in matched if str(t.get("kind", "")).startswith("spam")]
    f1s = [token_f1(extracted[i], t["main_text"]) for i, t in truth.items() if t.get("main_text") and i in extracted]
    unaccounted = sorted(set(truth) - set(rows))
    return {
        "records_in_truth": len(truth),
        "records_matched": len(matched),
        "records_missing_from_ledger": len(unaccounted),
        "language_id_accuracy": _r(lang_acc), "language_id_documents": len(lang),
        "english_articles_kept": _r(_share([k for lg, k in kept_lang if lg == "en"])),
        "other_language_articles_kept": _r(_share([k for lg, k in kept_lang if lg != "en"])),
        "near_dup_precision": _r(true_pos / len(flagged)) if flagged else None,
        "near_dup_recall": _r(found / len(reached)) if reached else None,
        "near_dup_flagged": len(flagged), "near_dup_reached_dedup": len(reached),
        "near_dup_points_to_its_original": _r(_share(same_cluster)),
        "exact_dup_recall": _r(exact_found / len(exact_reached)) if exact_reached else None,
        "spam_kept_share": _r(_share(spam)), "spam_records": len(spam),
        "extraction_token_f1": _r(sum(f1s) / len(f1s)) if f1s else None, "extraction_documents": len(f1s),
    }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def plot_funnel(funnel: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [f["step"] for f in funnel]
    docs = [f["documents"] for f in funnel]
    mb = [f["bytes"] / 1e6 for f in funnel]
    fig, ax1 = plt.subplots(figsize=(10, 4.5), dpi=100)
    x = range(len(steps))
    ax1.bar(x, docs, color="#4c72b0", label="documents")
    ax1.set_ylabel("documents after step")
    ax1.set_xticks(list(x), steps, rotation=35, ha="right")
    ax2 = ax1.twinx()
    ax2.plot(list(x), mb, color="#dd8452", marker="o", label="MB")
    ax2.set_ylabel("MB after step (raw before extract, text after)")
    ax2.set_ylim(bottom=0)
    ax1.set_title("curate funnel: documents and bytes after each step")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": None})
    plt.close(fig)


def _markdown(result: dict, plan: dict) -> str:
    acc = result["accounting"]
    lines = ["# curate report", "",
             f"Records read: **{acc['records_read']}** · kept: **{acc['kept']}** · dropped: "
             f"**{sum(acc['dropped'].values())}** (records read = kept + dropped, checked).", "",
             "![funnel](funnel.png)", "", "## Funnel", "",
             "| step | documents in | documents out | dropped | bytes out |", "|---|---:|---:|---:|---:|"]
    for f in result["funnel"][1:]:
        lines.append(f"| {f['step']} | {f['documents_in']} | {f['documents']} | {f['dropped']} | {f['bytes']:,} |")
    lines += ["", "## Dropped, by reason", "", "| reason | records |", "|---|---:|"]
    for reason, n in sorted(acc["dropped"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {reason} | {n} |")
    for reason, n in sorted(acc.get("flagged", {}).items()):  # decontamination.action = "flag"
        lines.append(f"| {reason} (flagged, kept) | {n} |")
    deco = plan["manifest"].get("metrics", {}).get("decontamination")
    if deco:
        lines += ["", f"## Decontamination ({deco['ngram']}-word n-grams, {deco['action']})", "",
                  "| evaluation set | texts | shorter than the n-gram | n-grams |", "|---|---:|---:|---:|"]
        lines += [f"| {s['set']} | {s['texts']} | {s['texts_shorter_than_ngram']} | {s['ngrams']} |" for s in deco["sets"]]
    if result.get("bounds"):
        lines += ["", "## Score cutoffs", "", "```", json.dumps(result["bounds"], indent=2), "```"]
    lines += ["", f"Dedup index: {result['dedup_index']['documents']} documents, "
              f"{result['dedup_index']['bytes_per_document']} bytes per document.", ""]
    ev = result.get("evaluation")
    if ev:
        lines += ["## Against the demo dump's ground truth", "", "| measure | value |", "|---|---:|"]
        for k in ("language_id_accuracy", "near_dup_precision", "near_dup_recall", "exact_dup_recall",
                  "spam_kept_share", "extraction_token_f1", "english_articles_kept", "other_language_articles_kept",
                  "records_missing_from_ledger"):
            lines.append(f"| {k.replace('_', ' ')} | {ev[k] if ev[k] is not None else 'n/a'} |")
        lines += ["", f"(language ID over {ev['language_id_documents']} documents with a predicted language; "
                  f"near-dup recall over the {ev['near_dup_reached_dedup']} true near duplicates that reached the "
                  f"dedup step; extraction F1 over {ev['extraction_documents']} extracted pages.)", ""]
    return "\n".join(lines)


def write_report(plan: dict, result: dict) -> list[tuple[str, str]]:
    """Writes stats.json, funnel.png, report.md into the output folder; returns (name, kind) of each."""
    from gristmill.curate.ledger import iter_ledger
    from gristmill.curate.pipeline import task_dir

    out = Path(plan["out_dir"])
    if plan.get("truth"):
        cols = ["id", "kept", "stage", "reason", "language", "duplicate_of"]
        rows = list(iter_ledger(out / result["ledger"], cols))
        extracted: dict[str, str] = {}
        for rank in range(plan["n_tasks"]):
            p = task_dir(plan["work_dir"], rank) / "extracted.jsonl"
            if p.is_file():
                with open(p, encoding="utf-8") as f:
                    for line in f:
                        r = json.loads(line)
                        extracted[r["id"]] = r["text"]
        result["evaluation"] = evaluate_against_truth(Path(plan["truth"]), rows, extracted)
    stats = {k: result[k] for k in ("records_read", "funnel", "bounds", "dedup_index") if k in result}
    stats.update(result["accounting"])
    stats["shards"] = [{"path": n, "documents": c} for n, c in result["shards"]]
    if result.get("evaluation"):
        stats["evaluation"] = result["evaluation"]
    atomic_write_json(out / "stats.json", stats)
    plot_funnel(result["funnel"], out / "funnel.png")
    atomic_write_text(out / "report.md", _markdown(result, plan))
    return [("stats.json", "stats"), ("funnel.png", "plot"), ("report.md", "report")]
