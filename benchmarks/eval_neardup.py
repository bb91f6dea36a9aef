"""Near-duplicate decisions on a judged dev set built from real web documents: P / R / F1 per dedup.verify.

    .venv/bin/python benchmarks/eval_neardup.py [--data ../shared/data] [--pairs 600] [--seeds 10]

The pairs are made from the Common Crawl documents of the Dolma sample (real web text, >= 150 words),
each pair a document and a variant of it, labelled by how it was made (the label is what a reader would
say, "at least mostly the same page", not a Jaccard value):

  duplicate       boilerplate: another site's header / footer lines added around the same article;
                  light edit: 2-5 % of the words replaced, dropped or inserted (typos, dates, names);
                  truncated: the first 75-95 % of the article (a teaser, a cut crawl);
                  paragraph: one paragraph of five or more removed, or two swapped
  not duplicate   rewritten: 35-60 % of the sentences replaced by sentences of other documents;
                  half: the first half of the article followed by the second half of another;
                  shared template: two different articles inside the same long header / footer;
                  listing: two different short texts (30-80 words: a product, a forum post) inside
                  the same 150-250-word page frame (Jaccard 0.4-0.8: the banding's false positives)

Each pair is decided in isolation as the curate stage decides it: near duplicates when the two share
a 14 x 8 band bucket (112 permutations, word 5-grams) and, with verification, when their Jaccard
(dedup.verify = signature: the MinHash estimate; exact: the shingle sets) is >= 0.7. Repeated over
--seeds MinHash seeds (the permutations change; the pairs do not); prints the median F1 and its range.
Also exact Jaccard >= 0.7 alone (no banding: the ceiling of the rule itself).
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_minhash import edit  # noqa: E402  (this folder is on sys.path when run as a script)
from gristmill.curate.dedup import MinHasher, band_keys, estimated_jaccard, exact_jaccard  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"


def load_docs(data: Path) -> list[str]:
    path = data / "web/cc-main-2019-30_dolma_docs.jsonl.gz"
    if not path.exists():
        sys.exit(f"{path}: not found; pass --data the folder that holds web/cc-main-2019-30_dolma_docs.jsonl.gz")
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    return [r["text"] for r in rows if len(r["text"].split()) >= 150]


def _sentences(text: str) -> list[str]:
    out, cur = [], []
    for w in text.split(" "):
        cur.append(w)
        if w.endswith((".", "!", "?")):
            out.append(" ".join(cur))
            cur = []
    return out + ([" ".join(cur)] if cur else [])


def _edit_words(text: str, share: float, rng: random.Random) -> str:
    """Words dropped, replaced and inserted at rate `share` (bench_minhash's edit)."""
    return " ".join(edit(text.split(" "), rng, share))


def make_pairs(docs: list[str], n: int, rng: random.Random) -> list[tuple[str, str, int, str]]:
    pairs = []
    for i in range(n):
        a = rng.choice(docs)
        b_doc = rng.choice(docs)
        kind = rng.choice(["boilerplate", "light_edit", "truncated", "paragraph",
                           "rewritten", "half", "shared_template", "listing"])
        paras = [p for p in a.split("\n") if p.strip()]
        if kind == "boilerplate":
            lines = [p for p in b_doc.split("\n") if p.strip()]
            b = "\n".join(lines[:rng.randint(1, 2)] + paras + lines[-rng.randint(1, 2):])
        elif kind == "light_edit":
            b = _edit_words(a, rng.uniform(0.02, 0.05), rng)
        elif kind == "truncated":
            words = a.split(" ")
            b = " ".join(words[:int(len(words) * rng.uniform(0.75, 0.95))])
        elif kind == "paragraph":
            if len(paras) < 5:
                b = _edit_words(a, 0.02, rng)
            elif rng.random() < 0.5:
                k = rng.randrange(len(paras))
                b = "\n".join(paras[:k] + paras[k + 1:])
            else:
                k = rng.randrange(len(paras) - 1)
                paras[k], paras[k + 1] = paras[k + 1], paras[k]
                b = "\n".join(paras)
        elif kind == "rewritten":
            sa, other = _sentences(a), _sentences(b_doc)
            share = rng.uniform(0.35, 0.6)
            b = " ".join(rng.choice(other) if rng.random() < share else s for s in sa)
        elif kind == "half":
            wa, wb = a.split(" "), b_doc.split(" ")
            b = " ".join(wa[:len(wa) // 2] + wb[len(wb) // 2:])
        elif kind == "listing":
            frame = rng.choice(docs).split(" ")
            cut = rng.randint(150, 250)
            head, tail = " ".join(frame[:cut // 2]), " ".join(frame[-(cut - cut // 2):])
            wa, wb = a.split(" "), b_doc.split(" ")
            k = rng.randint(30, 80)
            a = f"{head}\n{' '.join(wa[:k])}\n{tail}"
            b = f"{head}\n{' '.join(wb[:k])}\n{tail}"
        else:  # shared_template: a long shared frame around two different articles
            frame = " ".join(rng.choice(docs).split(" ")[:120])
            footer = " ".join(rng.choice(docs).split(" ")[-80:])
            a = f"{frame}\n{a}\n{footer}"
            b = f"{frame}\n{b_doc}\n{footer}"
        if b_doc == a and kind in ("rewritten", "half", "shared_template", "listing"):
            continue
        dup = int(kind in ("boilerplate", "light_edit", "truncated", "paragraph"))
        pairs.append((a, b, dup, kind))
    return pairs


def f1(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & gold).sum())
    p = tp / max(1, pred.sum())
    r = tp / max(1, gold.sum())
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pairs", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    docs = load_docs(args.data)
    pairs = make_pairs(docs, args.pairs, random.Random(0))
    gold = np.array([p[2] for p in pairs], dtype=bool)
    kinds = sorted({p[3] for p in pairs})
    print(f"{len(pairs)} pairs from {len(docs)} documents: {int(gold.sum())} duplicates; "
          + ", ".join(f"{k} {sum(p[3] == k for p in pairs)}" for k in kinds))
    sh = MinHasher(num_perm=1)
    exact = np.array([exact_jaccard(sh.shingles(a), sh.shingles(b)) for a, b, _, _ in pairs])
    print("exact Jaccard by kind (median): " + ", ".join(
        f"{k} {statistics.median(exact[[p[3] == k for p in pairs]]):.2f}" for k in kinds))
    results: dict[str, list[tuple[float, float, float]]] = {"banding alone (verify none)": [],
                                                            "banding + signature >= t": [],
                                                            "banding + exact >= t": []}
    for seed in range(1, args.seeds + 1):
        mh = MinHasher(num_perm=args.bands * args.rows, ngram=5, seed=seed)
        sa = mh.signatures([a for a, _, _, _ in pairs])
        sb = mh.signatures([b for _, b, _, _ in pairs])
        cand = (band_keys(sa, args.bands, args.rows) == band_keys(sb, args.bands, args.rows)).any(axis=1)
        est = estimated_jaccard(sa, sb)
        results["banding alone (verify none)"].append(f1(cand, gold))
        results["banding + signature >= t"].append(f1(cand & (est >= args.threshold), gold))
        results["banding + exact >= t"].append(f1(cand & (exact >= args.threshold), gold))
    print(f"\n{args.bands} x {args.rows} bands, threshold t = {args.threshold}; {args.seeds} MinHash seeds; median (min-max)")
    print(f"{'rule':32s} {'precision':>18s} {'recall':>18s} {'F1':>18s}")
    for name, rows in results.items():
        cols = []
        for j in range(3):
            v = [r[j] for r in rows]
            cols.append(f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        print(f"{name:32s} {cols[0]:>18s} {cols[1]:>18s} {cols[2]:>18s}")
    p, r, f = f1(exact >= args.threshold, gold)
    print(f"{'exact >= t, no banding':32s} {p:18.3f} {r:18.3f} {f:18.3f}")


if __name__ == "__main__":
    main()
