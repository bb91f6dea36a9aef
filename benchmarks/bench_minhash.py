"""MinHash signatures: gristmill's vectorised MinHasher vs datasketch 2.x MinHash.update_batch.

    .venv/bin/python benchmarks/bench_minhash.py [--data ../shared/data] [--docs 2000] [--rounds 3]

Documents (real text, at least --docs): the Common Crawl documents of the Dolma sample, the C4 demo
pages, the Wikipedia demo articles, then WikiText-2 paragraphs until there are enough. Both sides
use the same shingle sets: word 5-grams of `normalize_text` (our FineWeb-style normalisation),
num_perm permutations (default 128). Timed in --rounds rounds (the machine is shared): every method once
per round, in the order below in odd rounds and reversed in even ones; wall (perf_counter) and CPU
(process_time: all threads of this process) seconds per method and round are printed, then per method
the median seconds and the median (min-max) over rounds of datasketch update_batch's time / its time,
for wall and for CPU:

  datasketch update_batch   per document MinHash(num_perm).update_batch(shingle bytes); the shingle
                            strings are built beforehand and not timed (its sha1 per shingle is)
  datasketch + shingling    the same, plus building the shingle strings from the normalised text
  gristmill signatures      MinHasher(num_perm).signatures(raw texts): normalisation, words, shingle
                            hashes, permutations and min, all of it, for the whole batch
  gristmill from hashes     only the permutations + min, from precomputed uint64 shingle hashes

Accuracy: mean |J_est - J| against the exact Jaccard of the shingle sets, for ours and for
datasketch, on pairs of a document and an edited copy (words replaced, deleted or inserted; J from
~0.2 to ~1) and on random pairs of distinct documents. Also the memory of the near-dedup index per
document: gristmill NearDupIndex (14 bands x 8 rows over 112 permutations) vs datasketch MinHashLSH
with the same bands, measured with tracemalloc.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gristmill.curate.dedup import MinHasher, NearDupIndex, estimated_jaccard, normalize_text  # noqa: E402
from interleave import round_order, spread, timed  # noqa: E402  (benchmarks/interleave.py)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"


def load_docs(data: Path, want: int) -> tuple[list[str], dict[str, int]]:
    docs: list[str] = []
    sources: dict[str, int] = {}

    def add(name: str, texts) -> None:
        n0 = len(docs)
        docs.extend(t for t in texts if len(t.split()) >= 20)
        sources[name] = len(docs) - n0

    dolma = data / "web/cc-main-2019-30_dolma_docs.jsonl.gz"
    if dolma.is_file():
        with gzip.open(dolma, "rt", encoding="utf-8") as f:
            add("dolma CC-MAIN-2019-30", (json.loads(line)["text"] for line in f))
    c4 = data / "text/llamafactory_c4_demo.jsonl"
    if c4.is_file():
        add("c4 demo", (json.loads(line)["text"] for line in c4.open(encoding="utf-8")))
    wiki = data / "text/llamafactory_wiki_demo.txt"
    if wiki.is_file():
        add("wiki demo", wiki.read_text(encoding="utf-8").splitlines())
    for split in ("valid", "test"):
        path = data / f"text/wikitext-2/{split}.txt"
        if len(docs) >= want or not path.is_file():
            continue
        paras = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip() and not line.strip().startswith("=")]
        paras = [p for p in paras if len(p.split()) >= 20][: want - len(docs)]
        add(f"wikitext-2 {split} paragraphs", paras)
    if len(docs) < want:
        raise SystemExit(f"only {len(docs)} documents found under {data}; need {want} (see --data)")
    return docs, sources


def shingle_strings(norm: str, n: int = 5) -> list[str]:
    w = norm.split()
    return [" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))]


def datasketch_signatures(shingle_bytes: list[list[bytes]], num_perm: int):
    from datasketch import MinHash

    out = []
    for sh in shingle_bytes:
        m = MinHash(num_perm=num_perm)
        m.update_batch(sh)
        out.append(m)
    return out


def edit(words: list[str], rng: random.Random, rate: float) -> list[str]:
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue  # delete
        if r < 2 * rate / 3:
            out.append("x" + w[::-1])  # replace
        else:
            out.append(w)
        if rng.random() < rate / 3:
            out.append("inserted")  # insert
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all methods, order alternating (>= 1)")
    ap.add_argument("--edited", type=int, default=600, help="document / edited-copy pairs for the accuracy check")
    ap.add_argument("--random-pairs", type=int, default=600)
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    from datasketch import MinHash, MinHashLSH

    docs, sources = load_docs(a.data, a.docs)
    chars = sum(len(d) for d in docs)
    norms = [normalize_text(d) for d in docs]
    sh_str = [shingle_strings(t) for t in norms]
    sh_bytes = [[s.encode("utf-8") for s in sh] for sh in sh_str]
    n_sh = sum(len(s) for s in sh_str)
    print(f"documents: {len(docs)} ({', '.join(f'{k}: {v}' for k, v in sources.items())}); "
          f"{chars / 1e6:.2f} M characters, {n_sh} shingles (word 5-grams), num_perm={a.num_perm}")

    ours = MinHasher(num_perm=a.num_perm)
    hashes, offsets = ours.shingle_batch(docs)
    assert np.array_equal(np.diff(offsets), [len(s) for s in sh_str]), "shingle counts differ between the two sides"
    ours.signatures(docs[:50])  # warm-up: character tables

    def ds_with_shingling():
        return datasketch_signatures([[s.encode("utf-8") for s in shingle_strings(t)] for t in
                                      (normalize_text(d) for d in docs)], a.num_perm)

    methods = {
        "datasketch update_batch": lambda: datasketch_signatures(sh_bytes, a.num_perm),
        "datasketch + shingling": ds_with_shingling,
        "gristmill signatures": lambda: ours.signatures(docs),
        "gristmill from hashes": lambda: ours.signatures_from_hashes(hashes, offsets),
    }
    wall: dict[str, list[float]] = {k: [] for k in methods}  # seconds per round, per method
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    for rnd in range(a.rounds):
        for name in round_order(list(methods), rnd):
            _, w, c = timed(methods[name])
            wall[name].append(w)
            cpu[name].append(c)
        print(f"round {rnd + 1}: " + ", ".join(f"{k} {wall[k][-1]:.3f} s wall / {cpu[k][-1]:.3f} s CPU"
                                               for k in methods), flush=True)
    base = "datasketch update_batch"
    # > 1: faster than the base; the floor (1 us) keeps a too-short run from dividing by zero
    vs_wall = {k: [b / max(t, 1e-6) for b, t in zip(wall[base], wall[k])] for k in methods}
    vs_cpu = {k: [b / max(t, 1e-6) for b, t in zip(cpu[base], cpu[k])] for k in methods}
    print(f"\n{'method':28s} {'wall s':>8s} {'CPU s':>8s} {'docs/s':>10s} "
          f"{'vs datasketch update_batch, wall':>33s} {'CPU':>21s}")
    for name in methods:
        t, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:28s} {t:8.3f} {c:8.3f} {len(docs) / t:10.0f} {spread(vs_wall[name]):>33s} "
              f"{spread(vs_cpu[name]):>21s}")
    ratio = statistics.median(vs_wall["gristmill signatures"])
    print(f"\nspeed: gristmill signatures (from raw text) vs datasketch update_batch (from ready shingles), median "
          f"(min-max) over {a.rounds} rounds: wall {spread(vs_wall['gristmill signatures'])}, CPU "
          f"{spread(vs_cpu['gristmill signatures'])}  (target >= 4x wall: {'PASS' if ratio >= 4 else 'FAIL'})")

    # -- accuracy against exact Jaccard ----------------------------------------------------
    rng = random.Random(0)
    pairs_text: list[tuple[str, str, str]] = []  # (kind, text a, text b)
    for i in rng.sample(range(len(docs)), min(a.edited, len(docs))):
        words = docs[i].split()
        rate = rng.choice([0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15])
        pairs_text.append(("edited", docs[i], " ".join(edit(words, rng, rate))))
    for _ in range(a.random_pairs):
        i, j = rng.sample(range(len(docs)), 2)
        pairs_text.append(("random", docs[i], docs[j]))
    texts_a = [p[1] for p in pairs_text]
    texts_b = [p[2] for p in pairs_text]
    sig_a, sig_b = ours.signatures(texts_a), ours.signatures(texts_b)
    est_ours = estimated_jaccard(sig_a, sig_b)
    truth, est_ds = [], []
    for ta, tb in zip(texts_a, texts_b):
        sa, sb = set(shingle_strings(normalize_text(ta))), set(shingle_strings(normalize_text(tb)))
        truth.append(len(sa & sb) / len(sa | sb))
        ma, mb = MinHash(num_perm=a.num_perm), MinHash(num_perm=a.num_perm)
        ma.update_batch([s.encode("utf-8") for s in sa])
        mb.update_batch([s.encode("utf-8") for s in sb])
        est_ds.append(ma.jaccard(mb))
    truth, est_ds = np.array(truth), np.array(est_ds)
    kinds = np.array([p[0] for p in pairs_text])
    print(f"\naccuracy: mean |J_est - J| against exact Jaccard of the shingle sets ({a.num_perm} permutations)")
    print(f"{'pairs':34s} {'n':>5s} {'mean J':>7s} {'gristmill':>10s} {'datasketch':>11s} {'diff':>8s}")
    rows = [("document + edited copy", kinds == "edited"), ("random document pairs", kinds == "random"),
            ("edited, J in [0.2, 0.6)", (kinds == "edited") & (truth >= 0.2) & (truth < 0.6)),
            ("edited, J in [0.6, 0.9)", (kinds == "edited") & (truth >= 0.6) & (truth < 0.9)),
            ("edited, J >= 0.9", (kinds == "edited") & (truth >= 0.9)), ("all pairs", np.ones_like(truth, bool))]
    for label, m in rows:
        if not m.any():
            continue
        eo, ed = np.abs(est_ours[m] - truth[m]).mean(), np.abs(est_ds[m] - truth[m]).mean()
        print(f"{label:34s} {int(m.sum()):5d} {truth[m].mean():7.3f} {eo:10.4f} {ed:11.4f} {eo - ed:+8.4f}")
    m = kinds == "edited"
    diff = abs(np.abs(est_ours[m] - truth[m]).mean() - np.abs(est_ds[m] - truth[m]).mean())
    print(f"accuracy on document + edited copy pairs: |gristmill - datasketch| = {diff:.4f} "
          f"(target <= 0.005: {'PASS' if diff <= 0.005 else 'FAIL'})")

    # -- index memory ------------------------------------------------------------------------
    sig112 = MinHasher(num_perm=112).signatures(docs)
    ids = [f"doc-{i}" for i in range(len(docs))]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = NearDupIndex(bands=14, rows=8)
    idx.add(ids, sig112)
    ours_bytes = tracemalloc.get_traced_memory()[0] - before
    lean = []
    for s in sig112:
        mh = MinHash(num_perm=112, hashvalues=s.astype(np.uint32), scheme="affine32")
        lean.append(mh)
    before = tracemalloc.get_traced_memory()[0]
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    for i, mh in zip(ids, lean):
        lsh.insert(i, mh)
    ds_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"\nnear-dedup index (14 bands x 8 rows), bytes per document: gristmill NearDupIndex "
          f"{ours_bytes / len(docs):.0f} (+ {sig112.itemsize * sig112.shape[1]} if the 112 uint32 signature values "
          f"are kept), datasketch MinHashLSH {ds_bytes / len(docs):.0f}")
    del idx, lsh
    return 0


if __name__ == "__main__":
    sys.exit(main())
