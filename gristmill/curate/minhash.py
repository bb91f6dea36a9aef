"""Text normalisation, word n-gram shingle hashes and MinHash signatures, vectorised with NumPy.

How a document becomes a signature (all steps run on a whole batch of documents at once):

1. normalisation (`normalize_text`): Unicode NFKC, lowercase; every character that is not a
   letter or a combining mark (Unicode categories L* and M*) -- punctuation, digits, symbols,
   whitespace -- is a word separator. The normalised text is the words joined by single spaces, so
   its word tokenizer is `text.split()` (the same as regex `\\w+` on it, except that `\\w` would
   split words at combining marks, e.g. Devanagari vowel signs; we keep those inside the word).
2. word hashes: a polynomial hash of each word's code points in Z/2^64 (prefix sums, no Python
   loop per word), then the MurmurHash3 64-bit finaliser.
3. shingle hashes: each run of `ngram` consecutive words, combined order-sensitively
   (sum_j fmix64(w_j) * M_j + M_len, then fmix64) -> uint64. A document with fewer than `ngram`
   words is one shingle of all its words (an empty document: one shingle of no words).
4. MinHash: the top 32 bits x of each shingle hash go through the permutations, and each
   permutation keeps its minimum over the document's shingles. Two schemes, both bit-identical to
   datasketch 2.x fed the same 32-bit input hashes and seed (the tests check this):
   - "affine32" (default; datasketch 2.x's default): x -> fmix32(x), then a*x + b mod 2^32
     with odd a. A bijection, so no extra collisions; datasketch moved to it because the legacy fold
     from the 61-bit prime range to 32 bits inflates estimates on large sets (datasketch issue #212).
   - "legacy" (datasketch < 2.0): ((a*x + b) mod 2^64) mod p & (2^32 - 1), p = 2^61 - 1
     (Mersenne); the mod is done with shifts and masks instead of a division.
"""
from __future__ import annotations

import unicodedata
from typing import Literal, Sequence

import numpy as np

_U64 = np.uint64
_MERSENNE = (1 << 61) - 1
_MASK32 = (1 << 32) - 1

# Word hash base (odd, so it is invertible mod 2^64) and its inverse: word [s, e) hashes to
# sum_t c_t * B^(e-1-t) = (S[e] - S[s]) * B^(e-1) with S the prefix sums of c_t * B^-t.
_B = 0x9E3779B97F4A7C15
_B_INV = pow(_B, -1, 1 << 64)

# Shingle mixing constants: fixed (not tied to the MinHasher seed) so shingle hashes are the same
# for every MinHasher; odd 64-bit numbers from a fixed generator.
_MIX_RNG = np.random.RandomState(0x6D696E68)
_M_POS = (_MIX_RNG.randint(0, 1 << 62, 64, dtype=np.uint64) * _U64(2) + _U64(1))  # per position in the shingle
_M_LEN = (_MIX_RNG.randint(0, 1 << 62, 65, dtype=np.uint64) * _U64(2) + _U64(1))  # per shingle length (words)
_C0 = _U64(0x5BD1E9955BD1E995)

# Shingles per (num_perm, shingles) permutation block: 4096 x 128 uint32 = 2 MiB. The block is laid
# out permutation-major so the per-document min runs along contiguous memory (np.minimum.reduceat
# on axis 1 is several times faster than on axis 0 here).
_CHUNK = 4096
# Characters per batch of texts in `MinHasher.signatures` (bounds the per-character arrays).
_BATCH_CHARS = 1 << 16


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finaliser (a bijection that avalanches all bits); uint64 in, uint64 out."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finaliser, exactly as datasketch 2.x pre-mixes its input hashes."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


# -- character classes -------------------------------------------------------------------------

_BMP_KEEP: np.ndarray | None = None  # bool per code point < 0x10000: letter or mark
_ASTRAL_KEEP: dict[int, bool] = {}


def _is_word_char(cp: int) -> bool:
    return unicodedata.category(chr(cp))[0] in "LM"


def _keep_mask(cps: np.ndarray) -> np.ndarray:
    """True where a code point is a letter or a combining mark (part of a word)."""
    global _BMP_KEEP
    if _BMP_KEEP is None:  # built once per process (~20 ms)
        _BMP_KEEP = np.array([_is_word_char(i) for i in range(0x10000)], dtype=bool)
    keep = np.take(_BMP_KEEP, cps, mode="clip")  # clip: astral code points read entry 0xFFFF for now
    if cps.size and int(cps.max()) > 0xFFFF:  # rare (emoji, historic scripts, CJK extensions): one by one
        astral = cps > 0xFFFF
        for cp in np.unique(cps[astral]).tolist():
            if cp not in _ASTRAL_KEEP:
                _ASTRAL_KEEP[cp] = _is_word_char(cp)
        keep[astral] = [_ASTRAL_KEEP[c] for c in cps[astral].tolist()]
    return keep


_BMP_NFKC_UNSAFE: np.ndarray | None = None  # bool per code point < 0x10000: NFKC may change our words


def _nfkc_unsafe(cp: int) -> bool:
    ch = chr(cp)
    # NFKC leaves a text alone when every character is NFKC_QC=Yes with combining class 0: so flag
    # combining marks (incl. all NFKC_QC=Maybe marks), the Hangul vowel/trailing jamo that compose
    # with a syllable before them, and characters NFKC changes by themselves -- except those that
    # are separators before and after (no-break space -> space, ellipsis -> "..."): they cannot
    # change the words, and skipping them saves the normalize call for most web pages.
    if unicodedata.combining(ch) or unicodedata.category(ch)[0] == "M" or 0x1160 <= cp <= 0x11FF:
        return True
    mapped = unicodedata.normalize("NFKC", ch)
    if mapped == ch:
        return False
    return any(unicodedata.category(c)[0] in "LM" for c in ch + mapped)


def _nfkc_flags(cps: np.ndarray) -> np.ndarray:
    """True at characters that might make NFKC change the words (every astral character included)."""
    global _BMP_NFKC_UNSAFE
    if _BMP_NFKC_UNSAFE is None:  # built once per process (~0.1 s)
        _BMP_NFKC_UNSAFE = np.array([_nfkc_unsafe(i) for i in range(0x10000)], dtype=bool)
    flags = np.take(_BMP_NFKC_UNSAFE, cps, mode="clip")  # clip: astral code points read entry 0xFFFF
    if cps.size and int(cps.max()) > 0xFFFF:
        flags |= cps > 0xFFFF
    return flags


def _nfkc(text: str) -> str:
    """NFKC for word extraction: `unicodedata.normalize("NFKC", text)`, or `text` itself when the
    two have the same words (then the slow normalize call is skipped)."""
    if text.isascii() or not _nfkc_flags(_code_points(text)).any():
        return text
    return unicodedata.normalize("NFKC", text)


def _prepare(text: str) -> str:
    # NFKC first (it can produce upper case, e.g. from compatibility characters), then lowercase.
    return _nfkc(text).lower()


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: a str with lone surrogates (from surrogateescape decoding) still encodes; they
    # are not letters, so they separate words.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def normalize_text(text: str) -> str:
    """FineWeb-style normalisation for dedup: NFKC, lowercase, words of letters/marks joined by one space.

    Punctuation, digits, symbols and whitespace all separate words and are otherwise dropped, so
    two pages that differ only in dates, counters, punctuation or spacing normalise the same.
    """
    cps = _code_points(_prepare(text))
    if cps.size == 0:
        return ""
    keep = _keep_mask(cps)
    # A kept character, or a separator right after a kept character (becomes the single space).
    prev_keep = np.concatenate(([False], keep[:-1]))
    take = keep | prev_keep
    out = np.where(keep, cps, np.uint32(32))[take]
    return out.tobytes().decode("utf-32-le", "surrogatepass").strip()


# -- words and shingles ------------------------------------------------------------------------

class _Powers:
    """B^k and B^-k mod 2^64 for k < n, grown on demand (shared by all MinHashers)."""

    fwd = np.ones(1, dtype=np.uint64)
    inv = np.ones(1, dtype=np.uint64)

    @classmethod
    def get(cls, n: int) -> tuple[np.ndarray, np.ndarray]:
        if cls.fwd.size < n:
            size = max(n, _BATCH_CHARS + 1)
            for name, base in (("fwd", _B), ("inv", _B_INV)):
                arr = np.full(size, base, dtype=np.uint64)
                arr[0] = 1
                setattr(cls, name, np.multiply.accumulate(arr))  # wraps mod 2^64, as intended
        return cls.fwd[:n], cls.inv[:n]


def _batch_code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of `_prepare(t)` for every text, joined by '\n' (a separator), and each text's start.

    Same result as preparing each text alone, with whole-batch calls: one NFKC check on the joined
    code points (only texts with a flagged character are normalised) and one `lower()`.
    """
    texts = list(texts)
    joined = "\n".join(texts) + "\n"
    if not joined.isascii():
        cps = _code_points(joined)
        unsafe = _nfkc_flags(cps)
        if unsafe.any():
            starts = np.concatenate(([0], np.cumsum([len(t) + 1 for t in texts])[:-1]))
            for d in np.flatnonzero(np.logical_or.reduceat(unsafe, starts)).tolist():
                texts[d] = unicodedata.normalize("NFKC", texts[d])
            joined = "\n".join(texts) + "\n"
    if "\u0130" in joined:  # the one character whose lowercase is longer (I with dot -> i + dot)
        texts = [t.lower() for t in texts]
        joined = "\n".join(texts) + "\n"
    else:
        joined = joined.lower()
    lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
    return _code_points(joined), np.concatenate(([0], np.cumsum(lengths)[:-1]))


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of every text, and the word offsets per text (N + 1).

    The texts are joined with a separator into one code-point array, so word boundaries and
    hashes come from a handful of whole-batch NumPy passes.
    """
    cps, doc_starts = _batch_code_points(texts)
    padded = np.zeros(cps.size + 2, dtype=bool)  # False, keep..., False
    padded[1:-1] = _keep_mask(cps)
    inner = padded[1:-1]
    starts = np.flatnonzero(inner & ~padded[:-2])  # first character of each word
    ends = np.flatnonzero(inner & ~padded[2:]) + 1  # one past the last character
    fwd, inv = _Powers.get(cps.size + 1)
    prefix = np.empty(cps.size + 1, dtype=np.uint64)
    prefix[0] = 0
    np.multiply(cps, inv[: cps.size], out=prefix[1:], dtype=np.uint64)  # c_t * B^-t, no uint64 copy of cps
    np.cumsum(prefix[1:], out=prefix[1:])
    words = (prefix[ends] - prefix[starts]) * fwd[ends - 1]  # sum_t c_t B^(e-1-t) mod 2^64
    words = _fmix64(words)
    doc_of_word = np.searchsorted(doc_starts, starts, side="right") - 1
    counts = np.bincount(doc_of_word, minlength=len(texts))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return words, offsets


def _shingle_hashes(words: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """uint64 shingle hashes of all docs and their offsets (N + 1); every doc gets >= 1 shingle."""
    counts = np.diff(offsets)
    n_docs = counts.size
    n_sh = np.maximum(counts - n + 1, 1)  # shingles per doc
    sh_off = np.concatenate(([0], np.cumsum(n_sh))).astype(np.int64)
    out = np.empty(int(sh_off[-1]), dtype=np.uint64)
    # Full windows: global word index k is a window start when k + n <= its doc's word end.
    long_docs = counts >= n
    if long_docs.any() and words.size >= n:
        w_total = words.size - n + 1
        acc = np.full(w_total, _M_LEN[min(n, 64)], dtype=np.uint64) + _C0
        for j in range(n):
            acc += words[j: j + w_total] * _M_POS[j % 64]
        doc_of_k = np.repeat(np.arange(n_docs), counts)[:w_total]
        valid = np.arange(w_total) + n <= offsets[doc_of_k + 1]
        out_pos = np.repeat(long_docs, n_sh)  # positions in `out` that belong to long docs
        out[out_pos] = _fmix64(acc[valid])
    short = np.flatnonzero(~long_docs)
    if short.size:  # docs with fewer than n words: one shingle of all their words
        acc = _M_LEN[np.minimum(counts[short], 64)] + _C0
        for j in range(max(int(counts[short].max()), 0)):
            has = counts[short] > j
            acc[has] += words[offsets[short[has]] + j] * _M_POS[j % 64]
        out[sh_off[short]] = _fmix64(acc)
    return out, sh_off


def ngram_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every full word n-gram of each text (the shingle hashes of `MinHasher(ngram=n)`), for
    decontamination: a text with fewer than n words has none (no short-text shingle, which would match
    any text of the same few words). Returns (hashes, offsets (N + 1), word counts (N)); the k-th hash
    of text d is words k .. k+n-1 of `normalize_text(texts[d]).split()`."""
    words, offsets = _word_hashes(texts)
    counts = np.diff(offsets)
    hashes, sh_off = _shingle_hashes(words, offsets, n)
    full = np.repeat(counts >= n, np.diff(sh_off))  # drop the one short-text shingle of each short text
    n_full = np.maximum(counts - n + 1, 0)
    return hashes[full], np.concatenate(([0], np.cumsum(n_full))).astype(np.int64), counts


# -- MinHash -----------------------------------------------------------------------------------

class MinHasher:
    """MinHash signatures of word n-gram shingle sets, computed for a whole batch at once.

    `MinHasher(num_perm=112, ngram=5, seed=1, scheme="affine32")`. The permutations are drawn
    exactly as datasketch's `MinHash(num_perm, seed, scheme)` draws them, so the same 32-bit
    shingle hashes give the same signature as datasketch's (tests check it bit for bit).
    Signatures are uint32, (N, num_perm): `num_perm * 4` bytes per document.
    """

    def __init__(self, num_perm: int = 112, ngram: int = 5, seed: int = 1,
                 scheme: Literal["affine32", "legacy"] = "affine32") -> None:
        if num_perm < 1:
            raise ValueError(f"MinHasher num_perm={num_perm} must be >= 1")
        if not 1 <= ngram <= 64:
            raise ValueError(f"MinHasher ngram={ngram} must be between 1 and 64 (5 is the usual choice)")
        if scheme not in ("affine32", "legacy"):
            raise ValueError(f"MinHasher scheme={scheme!r}; use 'affine32' or 'legacy'")
        self.num_perm, self.ngram, self.seed, self.scheme = num_perm, ngram, seed, scheme
        gen = np.random.RandomState(seed)
        if scheme == "affine32":  # datasketch 2.x _init_permutations, affine32 branch
            self.a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
            self.b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        else:  # datasketch legacy: (a, b) pairs drawn one permutation at a time
            ab = np.array([(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                           for _ in range(num_perm)], dtype=np.uint64)
            self.a, self.b = ab[:, 0].copy(), ab[:, 1].copy()

    def shingles(self, text: str) -> np.ndarray:
        """uint64 hashes of the word `ngram`-gram shingles of one text, in order (may repeat)."""
        hashes, _ = self.shingle_batch([text])
        return hashes

    def shingle_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of many texts, concatenated, and their offsets (N + 1, int64)."""
        words, offsets = _word_hashes(texts)
        return _shingle_hashes(words, offsets, self.ngram)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(N, num_perm) uint32 MinHash signatures of the texts' shingle sets."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        # Batches of ~1M characters keep the per-character arrays (a few x 8 bytes each) small.
        i = 0
        while i < len(texts):
            j, chars = i, 0
            while j < len(texts) and (j == i or chars + len(texts[j]) <= _BATCH_CHARS):
                chars += len(texts[j])
                j += 1
            hashes, offsets = self.shingle_batch(texts[i:j])
            out[i:j] = self.signatures_from_hashes(hashes, offsets)
            i = j
        return out

    def signatures_from_shingles(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures of given uint64 shingle-hash arrays (one per document; may be empty)."""
        counts = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        flat = (np.concatenate([np.asarray(s, dtype=np.uint64) for s in shingle_sets])
                if len(shingle_sets) else np.empty(0, dtype=np.uint64))
        return self.signatures_from_hashes(flat, offsets)

    def signatures_from_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures from concatenated uint64 shingle hashes; doc d owns hashes[offsets[d]:offsets[d+1]].

        A document with no shingles gets the all-0xFFFFFFFF signature (datasketch's empty MinHash).
        """
        offsets = np.asarray(offsets, dtype=np.int64)
        n_docs = offsets.size - 1
        sig = np.full((n_docs, self.num_perm), _MASK32, dtype=np.uint32)
        x = (np.asarray(hashes, dtype=np.uint64) >> _U64(32)).astype(np.uint32)  # 32-bit inputs
        if x.size == 0:
            return sig
        if self.scheme == "affine32":
            x = _fmix32(x)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        # Offsets of the non-empty docs only: a partition of the rows with no empty segment, which
        # np.minimum.reduceat needs (an empty segment would return a value instead of nothing).
        seg = np.concatenate((offsets[nonempty], [x.size]))
        part = np.full((self.num_perm, nonempty.size), _MASK32, dtype=np.uint32)  # (P, docs)
        buf32 = np.empty((self.num_perm, _CHUNK), dtype=np.uint32)
        buf64 = np.empty((self.num_perm, _CHUNK), dtype=np.uint64) if self.scheme == "legacy" else None
        for r0 in range(0, x.size, _CHUNK):
            r1 = min(r0 + _CHUNK, x.size)
            block = self._permute(x[r0:r1], buf32[:, : r1 - r0], None if buf64 is None else buf64[:, : r1 - r0])
            d0 = int(np.searchsorted(seg, r0, side="right")) - 1
            d1 = int(np.searchsorted(seg, r1, side="left"))  # segments starting before r1
            starts = np.maximum(seg[d0:d1], r0) - r0
            red = np.minimum.reduceat(block, starts, axis=1)  # (P, d1 - d0)
            np.minimum(part[:, d0:d1], red, out=part[:, d0:d1])
        sig[nonempty] = part.T
        return sig

    def _permute(self, x: np.ndarray, out32: np.ndarray, out64: np.ndarray | None) -> np.ndarray:
        """(num_perm, rows) uint32: every permutation applied to every input hash of the block."""
        if self.scheme == "affine32":
            np.multiply(self.a[:, None], x[None, :], out=out32)  # wraps mod 2^32
            np.add(out32, self.b[:, None], out=out32)
            return out32
        # legacy: v = a*x + b mod 2^64; v mod p via the Mersenne fold t = (v & p) + (v >> 61) <= p + 7,
        # then t - p when t >= p, which is exactly when (t + 1) >> 61 == 1.
        assert out64 is not None
        v = out64
        np.multiply(self.a[:, None], x.astype(np.uint64)[None, :], out=v)
        np.add(v, self.b[:, None], out=v)
        t = (v & _U64(_MERSENNE)) + (v >> _U64(61))
        t += (t + _U64(1)) >> _U64(61)
        np.bitwise_and(t, _U64(_MASK32), out=t)  # (t - p) & mask == (t + 1) & mask for t in [p, p + 7]
        out32[...] = t
        return out32


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Share of equal signature entries (the MinHash estimate of Jaccard); works row-wise on 2-D input."""
    eq = np.asarray(sig_a) == np.asarray(sig_b)
    return eq.mean(axis=-1)
