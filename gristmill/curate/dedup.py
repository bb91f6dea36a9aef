"""Exact and near-duplicate detection: normalised-text hashes, MinHash LSH buckets, Jaccard-confirmed pairs, union-find clusters.

- Exact: `exact_key(text)` = sha256 of `normalize_text(text)`; keep the first document per key.
- Near: MinHash signatures (`MinHasher`, see minhash.py) cut into `bands` bands of `rows` values;
  documents that share any band bucket are candidate pairs; a candidate pair links its documents only
  when its Jaccard is >= threshold: estimated from the signatures (share of equal values; free) or,
  when asked, exact on the two shingle sets (`exact_jaccard`); connected components (union-find) are
  the clusters; each cluster keeps its first-seen (smallest index) document.

Why verify: banding alone links every pair that shares one band (14x8 bands link a pair of Jaccard 0.5
with probability 1 - (1 - 0.5^8)^14 = 5 %, of 0.6 with 21 %) and misses many above the threshold (56 %
found at 0.7). With a check of each candidate's Jaccard, the bands can be wide (curate's default 28x4
finds 99.95 % of the pairs at 0.7) and the threshold itself decides.
"""
from __future__ import annotations

import hashlib
from array import array
from typing import Callable, Sequence

import numpy as np

from gristmill.curate.minhash import MinHasher, _fmix64, estimated_jaccard, normalize_text

__all__ = ["normalize_text", "exact_key", "MinHasher", "estimated_jaccard", "band_keys", "lsh_candidates",
           "lsh_pairs", "UnionFind", "near_duplicate_clusters", "NearDupIndex", "exact_jaccard"]

#: With verification, a bucket of more documents than this is checked against its first document only.
MAX_BUCKET = 256
_U64 = np.uint64
_BAND_MUL = _U64(0x9FB21C651E98DF25)


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A & B| / |A | B| of two shingle-hash arrays (repeats allowed); two empty sets are identical (1.0)."""
    a, b = np.unique(a), np.unique(b)
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def exact_key(text: str) -> str:
    """sha256 hex digest of the normalised text: equal keys = exact duplicates up to case/punctuation/digits."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def _check_bands(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    sig = np.asarray(signatures)
    if sig.ndim != 2:
        raise ValueError(f"signatures must be 2-D (documents, num_perm); got shape {sig.shape}")
    if bands < 1 or rows < 1 or bands * rows > sig.shape[1]:
        raise ValueError(f"bands={bands} x rows={rows} = {bands * rows} needs that many signature values per "
                         f"document; the signatures have {sig.shape[1]}")
    return sig


def band_keys(signatures: np.ndarray, bands: int = 14, rows: int = 8) -> np.ndarray:
    """(N, bands) uint64 bucket keys: band b hashes signature columns [b*rows, (b+1)*rows)."""
    sig = _check_bands(signatures, bands, rows)
    n = sig.shape[0]
    block = sig[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    acc = np.full((n, bands), 0x2545F4914F6CDD1D, dtype=np.uint64)
    for j in range(rows):  # order-sensitive combination, then a full avalanche
        acc = _fmix64(acc * _BAND_MUL + block[:, :, j])
    return acc


def _band_key(sig: np.ndarray, b: int, rows: int) -> np.ndarray:
    """(N,) uint64 keys of band b alone, equal to band_keys(sig, bands, rows)[:, b] (a band's key depends
    only on its own columns). Scratch: 8 x (rows + 1) bytes per document, against band_keys' 8 x num_perm
    for its uint64 copy of the whole signature matrix plus 8 x bands for the result."""
    block = sig[:, b * rows: (b + 1) * rows].astype(np.uint64)  # (N, rows)
    acc = np.full(sig.shape[0], 0x2545F4914F6CDD1D, dtype=np.uint64)
    for j in range(rows):
        acc = _fmix64(acc * _BAND_MUL + block[:, j])
    return acc


def _bucket_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents sorted by key (stable: index order within a bucket), run starts and run lengths."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    lengths = np.diff(np.concatenate((starts, [sk.size])))
    return order, starts, lengths


def lsh_candidates(signatures: np.ndarray, bands: int = 14, rows: int = 8,
                   max_bucket: int | None = None) -> list[tuple[int, int]]:
    """All pairs (i, j), i < j, that share a bucket in at least one band; sorted, no repeats.

    A bucket of k documents gives k(k-1)/2 pairs. With `max_bucket`, a bucket of more than that many
    documents gives only its k - 1 pairs with its first document (a page template shared by thousands
    of pages would otherwise cost millions of comparisons; its members still meet the first one).
    """
    return [tuple(p) for p in lsh_pairs(signatures, bands, rows, max_bucket).tolist()]


def lsh_pairs(signatures: np.ndarray | None, bands: int = 14, rows: int = 8, max_bucket: int | None = None,
              keys: np.ndarray | None = None) -> np.ndarray:
    """lsh_candidates as a (P, 2) int64 array (sorted rows, no repeats): 16 bytes per pair, not a Python
    tuple; the band keys are made one band at a time (8 x (rows + 3) bytes of scratch per document), or
    given: `keys` = band_keys(signatures, bands, rows), (N, bands) uint64, instead of the signatures."""
    band, n = _bands(signatures, bands, rows, keys)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    parts = []
    for b in range(bands):
        order, starts, lengths = _bucket_runs(band(b))
        for s, k in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
            members = order[s: s + k]  # ascending document indices (stable sort)
            if max_bucket is not None and k > max_bucket:
                parts.append(np.stack([np.full(k - 1, members[0]), members[1:]], 1))
                continue
            ii, jj = np.triu_indices(k, 1)
            parts.append(np.stack([members[ii], members[jj]], 1))
        if len(parts) > 1:  # merge as we go: a pair found in many bands is held once
            parts = [np.unique(np.concatenate(parts), axis=0)]
    if not parts:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(parts), axis=0).astype(np.int64, copy=False)


def _bands(signatures: np.ndarray | None, bands: int, rows: int,
           keys: np.ndarray | None) -> tuple[Callable[[int], np.ndarray], int]:
    """(band b -> (N,) uint64 keys, N) from the signatures or from precomputed band keys."""
    if keys is not None:
        if keys.ndim != 2 or keys.shape[1] != bands:
            raise ValueError(f"keys must be (documents, bands={bands}); got shape {keys.shape}")
        return (lambda b: keys[:, b]), keys.shape[0]
    sig = _check_bands(signatures, bands, rows)
    return (lambda b: _band_key(sig, b, rows)), sig.shape[0]


class UnionFind:
    """Disjoint sets over 0..n-1 with path compression and union by size.

    The structural root is whatever union by size picks; `smallest(x)` is the smallest element of
    x's set (tracked per root), which is what dedup keeps: the first-seen document.
    Memory: 24 bytes per element (three int64 array.arrays: compact like numpy, cheap to index from Python).
    """

    def __init__(self, n: int = 0) -> None:
        self.parent = array("q", range(n))
        self.size = array("q", [1]) * n
        self.min = array("q", range(n))  # smallest element, valid at roots

    def __len__(self) -> int:
        return len(self.parent)

    def add(self) -> int:
        """A new singleton set; returns its element."""
        x = len(self.parent)
        self.parent.append(x)
        self.size.append(1)
        self.min.append(x)
        return x

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, x: int, y: int) -> int:
        """Merge the sets of x and y; returns the new root."""
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return rx
        if self.size[rx] < self.size[ry]:
            rx, ry = ry, rx
        self.parent[ry] = rx
        self.size[rx] += self.size[ry]
        if self.min[ry] < self.min[rx]:
            self.min[rx] = self.min[ry]
        return rx

    def smallest(self, x: int) -> int:
        return self.min[self.find(x)]

    def connected(self, x: int, y: int) -> bool:
        return self.find(x) == self.find(y)

    def smallest_all(self) -> np.ndarray:
        """int64 array: the smallest element of each element's set (vectorised: pointer jumping to the roots,
        log2(depth) passes over a copy of the parents; the sets themselves are left as they are)."""
        if not len(self.parent):
            return np.zeros(0, np.int64)
        root = np.frombuffer(self.parent, dtype=np.int64).copy()
        while True:
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
        return np.frombuffer(self.min, dtype=np.int64)[root]


def near_duplicate_clusters(signatures: np.ndarray | None, bands: int = 14, rows: int = 8,
                            threshold: float | None = None,
                            similarity: Callable[[np.ndarray], np.ndarray] | None = None,
                            keys: np.ndarray | None = None) -> np.ndarray:
    """Cluster representative per document: the smallest index (first seen) of its near-duplicate cluster.

    `roots[i] == i` means document i is kept; otherwise it duplicates document `roots[i]`.
    threshold None: every LSH candidate pair links its documents. threshold t: a candidate pair links
    only when its Jaccard is >= t: `similarity(pairs)` ((P, 2) int64 row indices -> (P,) floats) when
    given, else the estimate from the signatures (share of equal values over the whole signature);
    the pairs of a bucket larger than MAX_BUCKET are only those with its first document.
    `keys` (N, bands) uint64 = band_keys(signatures, bands, rows) may stand in for the signatures
    (signatures None; a threshold then needs `similarity`): finalize holds those, half the bytes.
    """
    if keys is not None and threshold is not None and similarity is None:
        raise ValueError("near_duplicate_clusters: band keys alone cannot verify pairs; pass similarity")
    band, n = _bands(signatures, bands, rows, keys)
    uf = UnionFind(n)
    if n < 2:
        return uf.smallest_all()
    if threshold is None:
        for b in range(bands):  # one band's keys at a time (see _band_key)
            order, starts, lengths = _bucket_runs(band(b))
            # Star edges: every bucket member to the bucket's first (smallest) document.
            first = np.repeat(order[starts], lengths)
            linked = first != order
            for i, j in zip(first[linked].tolist(), order[linked].tolist()):
                uf.union(i, j)
    else:
        pairs = lsh_pairs(signatures, bands, rows, max_bucket=MAX_BUCKET, keys=keys)
        if len(pairs):
            sims = (similarity(pairs) if similarity is not None
                    else estimated_jaccard(signatures[pairs[:, 0]], signatures[pairs[:, 1]]))
            for i, j in pairs[np.asarray(sims) >= threshold].tolist():
                uf.union(i, j)
    return uf.smallest_all()


class NearDupIndex:
    """Incremental near-duplicate index for one machine: documents arrive in batches, in order.

    `add(ids, signatures)` answers for each new document at once: None when no earlier document
    (kept or not) is a near duplicate of it, else the id of the first-seen document of the cluster
    it joins. `resolve()` gives the final answer for every document added so far; it equals
    `near_duplicate_clusters` over all signatures in the order added (tests check this).

    The two differ only when a later document bridges two clusters that each already had a kept
    document (A, then C not similar to A, then B similar to both): `add` kept C when it arrived;
    the clusters then merge and `resolve()` says C duplicates A. `late_merges()` lists such documents
    so a caller that keeps its output until the end can drop them too.

    Memory: with threshold None, one dict entry per (band, distinct bucket) holding the bucket's
    first document; with a threshold also every bucket's member list and every signature.
    """

    def __init__(self, bands: int = 14, rows: int = 8, threshold: float | None = None) -> None:
        self.bands, self.rows, self.threshold = bands, rows, threshold
        self.ids: list[str] = []
        self.uf = UnionFind()
        self.kept_on_add: list[bool] = []
        # Per band: bucket key -> first document (threshold None) or all documents (with threshold).
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self._sigs: list[np.ndarray] = []  # only with a threshold, for verification

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[str], signatures: np.ndarray) -> list[str | None]:
        """Index a batch (in order); per document None (kept) or the id of the kept document it duplicates."""
        sig = _check_bands(signatures, self.bands, self.rows)
        if len(ids) != sig.shape[0]:
            raise ValueError(f"{len(ids)} ids for {sig.shape[0]} signatures")
        keys = band_keys(sig, self.bands, self.rows).tolist()
        out: list[str | None] = []
        verify = self.threshold is not None
        for row, (doc_id, doc_keys) in enumerate(zip(ids, keys)):
            j = self.uf.add()
            self.ids.append(str(doc_id))
            if verify:
                self._sigs.append(sig[row])
            linked = False
            for b, key in enumerate(doc_keys):
                bucket = self._buckets[b]
                if not verify:
                    first = bucket.setdefault(key, j)
                    if first != j:
                        self.uf.union(first, j)
                        linked = True
                    continue
                members = bucket.setdefault(key, [])
                for i in members:
                    if not self.uf.connected(i, j) and float(
                            estimated_jaccard(self._sigs[i], sig[row])) >= self.threshold:
                        self.uf.union(i, j)
                    linked = linked or self.uf.connected(i, j)
                members.append(j)
            self.kept_on_add.append(not linked)
            out.append(None if not linked else self.ids[self.uf.smallest(j)])
        return out

    def resolve(self) -> list[str | None]:
        """Final verdict per document added: None (kept) or the id of its cluster's first document."""
        roots = self.uf.smallest_all().tolist()
        return [None if r == i else self.ids[r] for i, r in enumerate(roots)]

    def late_merges(self) -> list[tuple[str, str]]:
        """(id, id of the kept document) for documents `add` kept that `resolve` now marks duplicates."""
        res = self.resolve()
        return [(self.ids[i], dup) for i, dup in enumerate(res) if dup is not None and self.kept_on_add[i]]
