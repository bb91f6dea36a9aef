"""Dedup building blocks: normalisation, exact keys, shingles, MinHash (vs datasketch), LSH, union-find, clusters."""
from __future__ import annotations

import random
import unicodedata
from collections import deque

import numpy as np
import pytest

from gristmill.curate import minhash as mh_mod
from gristmill.curate.dedup import (MinHasher, NearDupIndex, UnionFind, band_keys, estimated_jaccard, exact_jaccard,
                                    exact_key,
                                    lsh_candidates, near_duplicate_clusters, normalize_text)


def _reference_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join("".join(c if unicodedata.category(c)[0] in "LM" else " " for c in text).split())


def _random_words(rng: random.Random, n: int, vocab: int = 50_000) -> list[str]:
    # Pronounceable random words from a large vocabulary: rarely repeat 5-grams by chance.
    syll = ["ka", "lo", "mi", "ren", "sto", "va", "qui", "pe", "zor", "un", "ta", "bel", "dri", "xo"]
    out = []
    for _ in range(n):
        k = rng.randrange(vocab)
        w = ""
        for _ in range(3):
            w += syll[k % len(syll)]
            k //= len(syll)
        out.append(w + str(k % 7).translate(str.maketrans("0123456", "abcdefg")))
    return out


def _shingle_set(text: str, n: int = 5) -> set[str]:
    w = normalize_text(text).split()
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


# -- normalisation and exact keys --------------------------------------------------------------

def test_normalize_text_matches_reference_on_random_unicode():
    rng = random.Random(0)
    pools = [(0x20, 0x7E), (0xA0, 0x2FFF), (0x300, 0x36F), (0x1100, 0x11FF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
             (0x1D400, 0x1D7FF), (0x1F300, 0x1F5FF)]
    for _ in range(3000):
        text = "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(rng.randint(0, 12)))
        assert normalize_text(text) == _reference_normalize(text), repr(text)
    assert normalize_text("Hello,  WORLD!! 2019\t\nÇa va? ﬁne_x") == "hello world ça va fine x"
    assert normalize_text("") == "" and normalize_text(" 123 ... ") == ""


def test_exact_key_ignores_case_punctuation_digits_and_spacing():
    a = "The quick brown fox, 2019 edition!"
    assert exact_key(a) == exact_key("the   QUICK brown fox -- 2020 edition")
    assert exact_key(a) != exact_key("The quick brown cat, 2019 edition!")
    assert len(exact_key(a)) == 64 and int(exact_key(a), 16) >= 0


# -- shingles and signatures -------------------------------------------------------------------

def test_shingles_count_order_and_short_docs():
    mh = MinHasher(ngram=5)
    words = "one two three four five six seven".split()
    sh = mh.shingles(" ".join(words))
    assert sh.dtype == np.uint64 and len(sh) == 3
    assert len(set(sh.tolist())) == 3
    assert not np.array_equal(mh.shingles(" ".join(reversed(words))), sh[::-1])  # order matters
    # Same words, different case/punctuation: same shingles.
    assert np.array_equal(mh.shingles("One, TWO; three. Four five six seven!"), sh)
    # Fewer than n words: one shingle of the whole text; different short texts differ.
    assert len(mh.shingles("just three words")) == 1
    assert mh.shingles("just three words")[0] != mh.shingles("just three")[0]
    assert len(mh.shingles("")) == 1 and mh.shingles("")[0] == mh.shingles("!!! 42")[0]


def test_shingle_batch_equals_one_by_one():
    rng = random.Random(1)
    mh = MinHasher(ngram=3)
    texts = [" ".join(_random_words(rng, rng.randint(0, 40))) for _ in range(30)]
    texts += ["", "İstanbul İzmir ŞEHİR", "naïve café ﬁle", "हिन्दी भाषा है और", "x\u00a0y…z", "\ud800 lone surrogate",
              "ΟΔΟΣ Σ ΣΑΣ", "Kelvin \u212a ＦＵＬＬ"]
    flat, offsets = mh.shingle_batch(texts)
    for i, t in enumerate(texts):
        assert np.array_equal(flat[offsets[i]:offsets[i + 1]], mh.shingles(t)), repr(t)
        w = normalize_text(t).split()
        assert offsets[i + 1] - offsets[i] == max(1, len(w) - 2)


def _naive_signature(mh: MinHasher, shingles: np.ndarray) -> np.ndarray:
    x = (shingles.astype(np.uint64) >> np.uint64(32)).astype(np.uint32)
    if mh.scheme == "affine32":
        x = mh_mod._fmix32(x)
        v = (x[:, None].astype(np.uint64) * mh.a.astype(np.uint64) + mh.b.astype(np.uint64)) % (1 << 32)
        return v.min(axis=0).astype(np.uint32)
    p = (1 << 61) - 1
    # Python ints: exact (a*x + b) mod 2^64 mod p, as datasketch's uint64 arithmetic does.
    return np.array([min(((int(a) * int(xi) + int(b)) % (1 << 64)) % p & 0xFFFFFFFF for xi in x.tolist())
                     for a, b in zip(mh.a.tolist(), mh.b.tolist())], dtype=np.uint32)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_match_naive_across_chunk_and_batch_boundaries(monkeypatch, scheme):
    rng = random.Random(2)
    texts = [" ".join(_random_words(rng, rng.randint(0, 60))) for _ in range(25)]
    mh = MinHasher(num_perm=16, seed=3, scheme=scheme)
    full = mh.signatures(texts)
    monkeypatch.setattr(mh_mod, "_CHUNK", 7)  # many chunks, documents straddling them
    monkeypatch.setattr(mh_mod, "_BATCH_CHARS", 50)  # many text batches
    small = mh.signatures(texts)
    assert np.array_equal(full, small)
    for i, t in enumerate(texts):
        assert np.array_equal(full[i], _naive_signature(mh, mh.shingles(t)))


@pytest.mark.parametrize("scheme,num_perm,seed", [("affine32", 128, 1), ("affine32", 112, 7), ("legacy", 64, 1)])
def test_signatures_bit_identical_to_datasketch_on_same_hashes(scheme, num_perm, seed):
    from datasketch import MinHash

    rng = random.Random(4)
    texts = [" ".join(_random_words(rng, rng.randint(1, 80))) for _ in range(8)]
    mh = MinHasher(num_perm=num_perm, seed=seed, scheme=scheme)
    sigs = mh.signatures(texts)
    assert sigs.shape == (8, num_perm) and sigs.dtype == np.uint32
    for t, sig in zip(texts, sigs):
        ds = MinHash(num_perm=num_perm, seed=seed, scheme=scheme, hashfunc=lambda v: int(v) >> 32)
        ds.update_batch(mh.shingles(t).tolist())
        assert np.array_equal(ds.hashvalues.astype(np.uint64), sig.astype(np.uint64))


def test_empty_inputs():
    mh = MinHasher(num_perm=8)
    assert mh.signatures([]).shape == (0, 8)
    for n in (0, 1):
        sig = mh.signatures(["a b c"] * n)
        assert near_duplicate_clusters(sig, 4, 2).tolist() == list(range(n)) and lsh_candidates(sig, 4, 2) == []
        assert NearDupIndex(4, 2).add([str(i) for i in range(n)], sig) == [None] * n
    sig = mh.signatures_from_shingles([np.empty(0, np.uint64), np.array([5 << 32], np.uint64)])
    assert (sig[0] == 0xFFFFFFFF).all() and not (sig[1] == 0xFFFFFFFF).all()


def test_minhash_error_matches_datasketch_on_known_jaccard_pairs():
    """Mean |J_est - J| of ours vs datasketch 2.x MinHash(num_perm=128) on the same shingle sets."""
    from datasketch import MinHash

    rng = np.random.default_rng(5)
    mh = MinHasher(num_perm=128, seed=1)
    targets = np.repeat(np.arange(1, 10) / 10, 200)  # J = 0.1 .. 0.9, 1800 pairs
    sets_a, sets_b, truth = [], [], []
    for j in targets:
        union = int(rng.integers(40, 120))
        inter = int(round(j * union))
        only = (union - inter) // 2
        ids = rng.choice(1 << 62, size=inter + 2 * only, replace=False).astype(np.uint64)
        a = np.concatenate([ids[:inter], ids[inter:inter + only]])
        b = np.concatenate([ids[:inter], ids[inter + only:]])
        sets_a.append(a)
        sets_b.append(b)
        truth.append(inter / (inter + 2 * only))
    truth = np.array(truth)
    ours = estimated_jaccard(mh.signatures_from_shingles(sets_a), mh.signatures_from_shingles(sets_b))

    def ds_sig(values: np.ndarray) -> MinHash:
        m = MinHash(num_perm=128, seed=11)  # datasketch's own defaults: sha1 of the bytes, affine32
        m.update_batch([int(v).to_bytes(8, "little") for v in values.tolist()])
        return m

    theirs = np.array([ds_sig(a).jaccard(ds_sig(b)) for a, b in zip(sets_a, sets_b)])
    err_ours, err_ds = np.abs(ours - truth).mean(), np.abs(theirs - truth).mean()
    print("mean |J_est - J|: ours", err_ours, "datasketch", err_ds)
    assert abs(err_ours - err_ds) <= 0.005, (err_ours, err_ds)
    assert err_ours < 0.04 and abs((ours - truth).mean()) < 0.01  # unbiased, ~sqrt(J(1-J)/128) error


# -- LSH, union-find, clusters ------------------------------------------------------------------

def _components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    comp = [-1] * n
    for s in range(n):
        if comp[s] >= 0:
            continue
        members, queue = [s], deque([s])
        comp[s] = s
        while queue:
            for v in adj[queue.popleft()]:
                if comp[v] < 0:
                    comp[v] = s
                    members.append(v)
                    queue.append(v)
        smallest = min(members)
        for v in members:
            comp[v] = smallest
    return comp


@pytest.mark.parametrize("seed", range(6))
def test_union_find_matches_connected_components(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 2 * n))]
    uf = UnionFind(n)
    for a, b in edges:
        uf.union(a, b)
    assert uf.smallest_all().tolist() == _components(n, edges)
    ref = _components(n, edges)
    for _ in range(200):
        a, b = rng.randrange(n), rng.randrange(n)
        assert uf.connected(a, b) == (ref[a] == ref[b])
    # Union by size keeps trees shallow: no element more than log2(n) + 1 links from its root.
    depth = max(_depth(uf, i) for i in range(n))
    assert depth <= max(1, int(np.log2(n)) + 1)


def _depth(uf: UnionFind, x: int) -> int:
    d = 0
    while uf.parent[x] != x:
        x = uf.parent[x]
        d += 1
    return d


def test_union_find_add_grows():
    uf = UnionFind()
    a, b, c = uf.add(), uf.add(), uf.add()
    uf.union(c, b)
    assert uf.smallest(c) == b and uf.smallest(a) == a and len(uf) == 3


def test_lsh_candidates_match_brute_force():
    rng = np.random.default_rng(6)
    sig = rng.integers(0, 4, size=(60, 12), dtype=np.uint32)  # small alphabet: many shared bands
    bands, rows = 4, 3
    got = lsh_candidates(sig, bands, rows)
    want = sorted((i, j) for i in range(60) for j in range(i + 1, 60)
                  if any(np.array_equal(sig[i, b * rows:(b + 1) * rows], sig[j, b * rows:(b + 1) * rows])
                         for b in range(bands)))
    assert got == want
    assert band_keys(sig, bands, rows).shape == (60, 4)
    with pytest.raises(ValueError, match="needs that many"):
        lsh_candidates(sig, 5, 3)


def test_clusters_equal_components_of_candidate_pairs():
    rng = np.random.default_rng(7)
    sig = rng.integers(0, 3, size=(80, 8), dtype=np.uint32)
    pairs = lsh_candidates(sig, 4, 2)
    assert near_duplicate_clusters(sig, 4, 2).tolist() == _components(80, pairs)
    ok = [(i, j) for i, j in pairs if (sig[i] == sig[j]).mean() >= 0.5]
    assert near_duplicate_clusters(sig, 4, 2, threshold=0.5).tolist() == _components(80, ok)


def _edit(words: list[str], rng: random.Random, share: float) -> list[str]:
    out = list(words)
    for i in rng.sample(range(len(out)), max(1, int(share * len(out)))):
        out[i] = "edited" + out[i]
    return out


def test_near_dedup_finds_planted_duplicates():
    rng = random.Random(8)
    bases = [_random_words(rng, 300) for _ in range(40)]
    texts = [" ".join(w) for w in bases]
    planted = {}  # index of a near copy -> index of its original
    for k in range(0, 40, 4):
        planted[len(texts)] = k
        texts.append(" ".join(_edit(bases[k], rng, 0.01)))  # ~1% words changed: J ~ 0.9
    planted[len(texts)] = 1
    texts.append(texts[1].upper() + " !!!")  # exact duplicate after normalisation
    sigs = MinHasher().signatures(texts)
    roots = near_duplicate_clusters(sigs)
    for i in range(len(texts)):
        assert roots[i] == planted.get(i, i), (i, roots[i])
    assert near_duplicate_clusters(sigs, threshold=0.7).tolist() == roots.tolist()


def test_transitive_cluster_keeps_first_seen_signatures():
    # A and B share band 0; B and C share band 1; A and C share no band: one cluster, A kept.
    a = np.array([1, 2, 3, 4, 5, 6], np.uint32)
    b = np.array([1, 2, 7, 8, 9, 9], np.uint32)
    c = np.array([0, 0, 7, 8, 5, 0], np.uint32)
    sig = np.stack([a, b, c, np.array([4, 4, 4, 4, 4, 4], np.uint32)])
    assert lsh_candidates(sig, 3, 2) == [(0, 1), (1, 2)]
    assert near_duplicate_clusters(sig, 3, 2).tolist() == [0, 0, 0, 3]


def test_transitive_cluster_from_text_with_verification():
    rng = random.Random(9)
    words = _random_words(rng, 340)
    a, b, c = (" ".join(words[s:s + 300]) for s in (0, 15, 30))
    sa, sb, sc = _shingle_set(a), _shingle_set(b), _shingle_set(c)
    jac = lambda x, y: len(x & y) / len(x | y)  # noqa: E731
    assert jac(sa, sb) > 0.9 and jac(sb, sc) > 0.9 and jac(sa, sc) < 0.82
    sig = MinHasher(num_perm=512).signatures([c[:0] + "unrelated text here " * 3, a, b, c])
    est = estimated_jaccard(sig[[1, 2, 1]], sig[[2, 3, 3]])
    assert est[0] >= 0.86 and est[1] >= 0.86 and est[2] < 0.86  # A~B, B~C, A not ~C
    roots = near_duplicate_clusters(sig, bands=64, rows=8, threshold=0.86)
    assert roots.tolist() == [0, 1, 1, 1]  # one cluster {A, B, C}, A (first seen) kept


def test_near_dup_index_equals_batch_clusters():
    rng = np.random.default_rng(10)
    sig = rng.integers(0, 3, size=(120, 8), dtype=np.uint32)
    ids = [f"d{i}" for i in range(120)]
    for threshold in (None, 0.5):
        idx = NearDupIndex(bands=4, rows=2, threshold=threshold)
        online = []
        for s in range(0, 120, 17):  # uneven batches
            online += idx.add(ids[s:s + 17], sig[s:s + 17])
        roots = near_duplicate_clusters(sig, 4, 2, threshold=threshold)
        assert idx.resolve() == [None if r == i else ids[r] for i, r in enumerate(roots)]
        late = dict(idx.late_merges())
        for i, verdict in enumerate(online):
            final = idx.resolve()[i]
            if ids[i] in late:
                assert verdict is None and final == late[ids[i]]
            elif verdict is None:
                assert final is None
            else:  # online duplicate verdicts stay duplicates (maybe of an earlier root after a merge)
                assert final is not None and int(final[1:]) <= int(verdict[1:])


def test_near_dup_index_bridge_is_a_late_merge():
    a = np.array([1, 1, 1, 1], np.uint32)
    c = np.array([2, 2, 2, 2], np.uint32)
    b = np.array([1, 1, 2, 2], np.uint32)  # shares band 0 with A, band 1 with C
    idx = NearDupIndex(bands=2, rows=2)
    assert idx.add(["A", "C"], np.stack([a, c])) == [None, None]
    assert idx.add(["B"], b[None]) == ["A"]
    assert idx.resolve() == [None, "A", "A"]
    assert idx.late_merges() == [("C", "A")]
    assert near_duplicate_clusters(np.stack([a, c, b]), 2, 2).tolist() == [0, 0, 0]


def test_exact_jaccard_matches_python_sets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 40, rng.integers(0, 30)), rng.integers(0, 40, rng.integers(0, 30))
        sa, sb = set(a.tolist()), set(b.tolist())
        want = len(sa & sb) / len(sa | sb) if sa | sb else 1.0
        assert exact_jaccard(a.astype(np.uint64), b.astype(np.uint64)) == pytest.approx(want)


def _near_pair(base: list[str], rng: random.Random, lo: float, hi: float) -> tuple[list[str], float]:
    """A copy of `base` (sentences) with some sentences replaced, whose estimated Jaccard (112 perms, 5-grams,
    as curate computes it) lies in [lo, hi) and which shares at least one 14x8 band with `base`."""
    from curate_fixtures import _sentence
    mh = MinHasher()
    for _ in range(2000):
        other = [s if rng.random() > 0.25 else _sentence(rng) for s in base]
        sig = mh.signatures([" ".join(base), " ".join(other)])
        est = float(estimated_jaccard(sig[0], sig[1]))
        if lo <= est < hi and lsh_candidates(sig) == [(0, 1)]:
            return other, est
    raise AssertionError(f"no pair with estimated Jaccard in [{lo}, {hi})")


@pytest.mark.parametrize("verify", ["none", "signature", "exact"])
def test_curate_confirms_candidate_pairs_before_dropping(tmp_path, verify):
    """A candidate pair below dedup.threshold is kept unless verification is off; one above is dropped in
    every mode, and the ledger gives its Jaccard with the kept document."""
    import json

    import pyarrow.parquet as pq

    from curate_fixtures import _sentence
    from gristmill.curate.config import CurateConfig, DedupConfig
    from gristmill.curate.run import run_curate

    rng = random.Random(5)
    base = [_sentence(rng) for _ in range(40)]
    low, low_est = _near_pair(base, rng, 0.35, 0.65)  # shares a band, clearly below 0.7
    high, high_est = _near_pair(base, rng, 0.85, 0.97)
    filler = [[_sentence(rng) for _ in range(40)] for _ in range(3)]
    docs = [base, *filler[:2], low, high, filler[2]]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(d)}) + "\n" for i, d in enumerate(docs)))
    out = tmp_path / verify
    run_curate(CurateConfig(dedup=DedupConfig(verify=verify)), {"data": [data]}, out)
    rows = {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}
    assert rows["d0"]["kept"] and rows["d1"]["kept"] and rows["d5"]["kept"]
    assert rows["d4"]["reason"] == "near_duplicate" and rows["d4"]["duplicate_of"] == "d0"
    assert rows["d3"]["kept"] is (verify != "none")
    if verify == "none":
        assert rows["d3"]["reason"] == "near_duplicate"
    sim = rows["d4"]["similarity"]
    if verify == "exact":
        mh = MinHasher()
        want = exact_jaccard(mh.shingles(" ".join(base)), mh.shingles(" ".join(high)))
        assert sim == pytest.approx(want, abs=1e-4) and sim >= 0.7
    else:
        assert sim == pytest.approx(high_est, abs=1e-4)


def test_a_huge_bucket_is_verified_against_its_first_document_only():
    """A template shared by many pages: with verification, a bucket over MAX_BUCKET documents costs k - 1
    comparisons, not k(k-1)/2, and still links every member that is similar to the first one."""
    from gristmill.curate import dedup

    rng = np.random.default_rng(11)
    n = dedup.MAX_BUCKET + 40
    sig = rng.integers(0, 1 << 30, size=(n, 8), dtype=np.uint32)
    sig[:, :2] = 7  # band 0 shared by all: one bucket of n documents
    sig[1:6, 2:6] = sig[0, 2:6]  # documents 1-5 share 6 of 8 values with document 0 (J ~ 0.75)
    pairs = lsh_candidates(sig, 4, 2, max_bucket=dedup.MAX_BUCKET)
    # the big bucket: (0, j) for every j; bands 1 and 2: all 15 pairs among documents 0-5
    assert sorted(pairs) == sorted({(0, j) for j in range(1, n)} | {(i, j) for i in range(6) for j in range(i + 1, 6)})
    assert len(lsh_candidates(sig, 4, 2)) == n * (n - 1) // 2
    roots = near_duplicate_clusters(sig, 4, 2, threshold=0.7)
    assert roots.tolist() == [0] * 6 + list(range(6, n))
