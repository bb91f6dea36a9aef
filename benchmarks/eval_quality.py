"""The quality score on labelled dev sets built from ../shared/data: AUC of each signal and of the score.

    .venv/bin/python benchmarks/eval_quality.py [--data ../shared/data] [--work /tmp/eval-quality] [--json OUT]

Trains what `gristmill reference-lm` / `quality-model` train (the model stages, defaults),
on TRAIN files, then scores two dev sets made of other files:

  clean-vs-web  positives: clean human text (wikitext-2 test articles, held-out Gutenberg books cut into
                passages, the C4 demo documents); negatives: real web text extracted from Common Crawl WARC
                excerpts the training did not use, plus the Dolma CC-2019 documents.
  degraded      positives: held-out clean documents; negatives: other held-out clean documents damaged
                the way web text is: wrapped in navigation / footer boilerplate, lines repeated, words
                shuffled, cut to a snippet, or turned into a keyword list.

What they can and cannot show: clean-vs-web is the classifier's own task on new files (two different
distributions, so every signal looks good); degraded isolates kinds of damage we made ourselves.
Neither is the human good / bad judgement of web documents the issue measures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gristmill.curate.config import QualityModelConfig, ReadersConfig, ReferenceConfig  # noqa: E402
from gristmill.curate.model_stages import run_quality_model, run_reference  # noqa: E402
from gristmill.curate.perplexity import load_scorer  # noqa: E402
from gristmill.curate.score import SIGNS, QualityScorer, auc, feature_matrix  # noqa: E402

TRAIN_WEB = ["dolma_wget_sample-0000.warc.gz", "pywb_iana.warc.gz", "cc-main-2014-35_eugeneware_excerpt.warc"]
DEV_WEB = ["cc-main-2020-34_resiliparse_excerpt.warc.gz", "cc-main-2024-22_whirlwind.warc.gz",
           "dolma_wget_sample-0001.warc.gz"]
TRAIN_BOOKS = ["austen-emma", "melville-moby_dick", "chesterton-ball", "shakespeare-hamlet", "whitman-leaves"]
DEV_BOOKS = ["austen-persuasion", "chesterton-brown", "chesterton-thursday", "milton-paradise",
             "shakespeare-macbeth", "blake-poems"]


def detok(line: str) -> str:
    """wikitext-2's tokenised text back to ordinary prose."""
    s = line.strip().replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "UNK")
    s = re.sub(r" ([.,;:!?)'\]])", r"\1", s)
    s = re.sub(r"([(\[]) ", r"\1", s)
    return s.replace(" n't", "n't").replace(" 's", "'s")


def wikitext_articles(path: Path) -> list[str]:
    arts, cur = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if re.match(r"^ = [^=].* = $", line):
            if cur:
                arts.append("\n".join(cur))
            cur = []
        elif line.strip() and not line.strip().startswith("="):
            cur.append(detok(line))
    if cur:
        arts.append("\n".join(cur))
    return [a for a in arts if a.strip()]


def book_paragraphs(path: Path) -> list[str]:
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p.split()) >= 5]


def book_passages(path: Path, rng: random.Random, n: int) -> list[str]:
    paras = book_paragraphs(path)
    out = []
    for _ in range(n):
        i = rng.randrange(len(paras))
        take, words = [], 0
        target = rng.randint(80, 900)
        while i < len(paras) and words < target:
            take.append(paras[i])
            words += len(paras[i].split())
            i += 1
        out.append("\n".join(take))
    return out


def web_pages(paths: list[Path]) -> list[str]:
    from gristmill.curate.model_stages import _web_negatives

    out = []
    for p in paths:
        tmp = Path("/tmp") / f"eval-quality-{p.name}.jsonl"
        _web_negatives([p], tmp, 100_000)
        out += [json.loads(x)["text"] for x in tmp.read_text(encoding="utf-8").splitlines() if x.strip()]
    return out


NAV = ["Home", "About us", "Contact", "Login", "Register", "Search", "Menu", "Share", "Tweet", "Email", "Print",
       "Next »", "« Previous", "Subscribe to our newsletter", "Privacy Policy", "Terms of Use", "Cookie settings",
       "All rights reserved.", "Related posts", "Leave a comment", "Read more", "Categories", "Tags", "Archives",
       "Follow us on Facebook", "Skip to content", "Sign in", "Cart (0)", "Top stories", "Popular"]


def degrade(doc: str, rng: random.Random, vocab: list[str]) -> str:
    words = doc.split()
    kind = rng.choice(["boilerplate", "repeat", "shuffle", "snippet", "keywords"])
    if kind == "boilerplate":  # a short excerpt of the text inside navigation and footer lines
        k = rng.randint(15, 60)
        start = rng.randrange(max(1, len(words) - k))
        head = rng.sample(NAV, rng.randint(6, 14))
        foot = rng.sample(NAV, rng.randint(6, 14))
        return "\n".join(head + [" ".join(words[start:start + k])] + foot + [f"© {rng.randint(2005, 2024)}"])
    if kind == "repeat":  # lines repeated (templated pages, scraped comment spam)
        lines = [ln for ln in doc.split("\n") if ln.strip()] or [doc]
        lines = [" ".join(ln.split()[:rng.randint(8, 25)]) for ln in lines]
        base = rng.sample(lines, min(len(lines), rng.randint(1, 3)))
        return "\n".join(rng.choice(base) for _ in range(rng.randint(6, 30)))
    if kind == "shuffle":  # word salad (spun / machine-garbled text) of the same length
        rng.shuffle(words)
        return " ".join(words)
    if kind == "snippet":  # a stub: a few dozen words
        k = rng.randint(10, 50)
        start = rng.randrange(max(1, len(words) - k))
        return " ".join(words[start:start + k])
    # keyword list: SEO spam, tag clouds
    return "\n".join(" ".join(rng.sample(vocab, rng.randint(1, 4))) for _ in range(rng.randint(20, 80)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/eval-quality"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    data, work = a.data, a.work
    work.mkdir(parents=True, exist_ok=True)

    # -- training files (the model stages' inputs): wikitext valid lines + Gutenberg paragraphs vs raw web
    pos = work / "positive.txt"
    lines = [detok(x) for x in (data / "text/wikitext-2/valid.txt").read_text(encoding="utf-8").split("\n")
             if x.strip() and not x.strip().startswith("=")]
    for b in TRAIN_BOOKS:
        lines += book_paragraphs(data / f"text/gutenberg_nltk/{b}.txt.gz")
    pos.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ref_dir, q_dir = work / "reference-lm", work / "quality-model"
    run_reference(ReferenceConfig(), {"text": [pos]}, ref_dir)
    m = run_quality_model(QualityModelConfig(), {"positive": [pos], "negative": [data / "web" / w for w in TRAIN_WEB],
                                                 "reference": [ref_dir]}, q_dir)
    print(f"quality-model {m.id}: training-holdout signals_auc {m.metrics.get('signals_auc')}")
    print(f"weights {m.metrics.get('combiner_weights')}")

    # -- dev sets
    clean = wikitext_articles(data / "text/wikitext-2/test.txt")
    for b in DEV_BOOKS:
        clean += book_passages(data / f"text/gutenberg_nltk/{b}.txt.gz", rng, 40)
    clean += [json.loads(x)["text"] for x in (data / "text/llamafactory_c4_demo.jsonl").read_text().splitlines()]
    web = web_pages([data / "web" / w for w in DEV_WEB])
    with gzip.open(data / "web/cc-main-2019-30_dolma_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        web += [json.loads(x)["text"] for x in f if x.strip()]
    rng.shuffle(clean)
    half = len(clean) // 2
    vocab = sorted({w for d in clean[:50] for w in re.findall(r"[A-Za-z]{4,}", d)})
    sets = {"clean-vs-web": (clean, web),
            "degraded": (clean[:half], [degrade(d, rng, vocab) for d in clean[half:]])}

    scorer = QualityScorer(q_dir, ref_dir)
    ppl_scorer = load_scorer(ref_dir)
    feats = scorer.combiner.features
    table: dict[str, dict[str, float]] = {}
    for name, (p, n) in sets.items():
        texts = p + n
        y = np.array([1] * len(p) + [0] * len(n))
        ppl = ppl_scorer.perplexities(texts)
        probs = scorer.classifier.scores(texts)
        x = feature_matrix(texts, feats, probs, ppl)
        row = {f: auc(SIGNS[f] * x[:, j], y) for j, f in enumerate(feats)}
        row["score"] = auc(scorer.scores(texts, ppl), y)
        row["documents"] = f"{len(p)}+/{len(n)}-"
        table[name] = row
    cols = feats + ["score"]
    print("AUC".ljust(14) + "".join(c[:14].rjust(15) for c in cols) + "   documents")
    for name, row in table.items():
        print(name.ljust(14) + "".join(f"{row[c]:15.3f}" for c in cols) + f"   {row['documents']}")
    if a.json:
        a.json.write_text(json.dumps({"quality_model": m.id, "weights": m.metrics.get("combiner_weights"),
                                      "training_holdout": m.metrics.get("signals_auc"), "dev": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
