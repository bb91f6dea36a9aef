"""Perplexity under a reference language model: n-gram training (ARPA), scorers, CCNet-style cutoffs.

Reference n-gram model (`train_ngram`): interpolated modified Kneser-Ney (Chen & Goodman), the
smoothing KenLM's lmplz uses, written as a standard ARPA file that KenLM, SRILM or our own reader
load. Interpolated KN fits ARPA exactly: every listed n-gram stores its interpolated probability
and every context its interpolation weight as the backoff, so the model is normalised.

Tokenisation (`lm_tokens`, shared by training and every scorer but the causal LM): NFKC, lowercase,
every digit -> "0" (as CCNet does, so numbers do not blow up the vocabulary), tokens are runs of
word characters (`\\w+`) or single punctuation/symbol characters. Each non-empty line of a document
is one sentence: `<s> tokens </s>`. Words unseen in training score as `<unk>`.

A document's perplexity is 10 ** (-sum(log10 p) / n), n = tokens + one `</s>` per sentence
(KenLM's convention); for a causal LM it is exp(mean token negative log-likelihood).
"""
from __future__ import annotations

import gzip
import io
import math
import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Iterable, Sequence

import numpy as np

from gristmill.curate import CurateError
from gristmill.manifests import MANIFEST_NAME, atomic_open, read_manifest

TOKENIZER = "nfkc-lower-digits0-words-punct/1"  # recorded in manifests; bump when lm_tokens changes
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGIT = re.compile(r"\d")
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback values


def lm_tokens(line: str) -> list[str]:
    """The n-gram model's tokens of one line (see the module docstring)."""
    line = unicodedata.normalize("NFKC", line).lower()
    return _TOKEN.findall(_DIGIT.sub("0", line))


def sentences(text: str) -> list[list[str]]:
    """Token lists of the non-empty lines of a document (an empty document: one empty sentence)."""
    out = [t for t in (lm_tokens(line) for line in text.splitlines()) if t]
    return out or [[]]


# -- training ----------------------------------------------------------------------------------

def _discounts(adjusted: dict[tuple[str, ...], int]) -> tuple[tuple[float, float, float], bool]:
    """Modified KN discounts D1, D2, D3+ from the counts-of-counts of adjusted counts (Chen & Goodman).

    Returns (discounts, fell_back): too little data for the estimate (a zero count-of-count or a
    discount outside (0, r]) falls back to KenLM's 0.5 / 1 / 1.5.
    """
    n = Counter(c for g, c in adjusted.items() if c <= 4 and g != (BOS,))
    n1, n2, n3, n4 = (n.get(r, 0) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return _FALLBACK_DISCOUNTS, True
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d[r] <= r + 1 for r in range(3)):
        return _FALLBACK_DISCOUNTS, True
    return d, False


def train_ngram(texts: Iterable[str], out_path: Path, order: int = 3, *, info: dict | None = None) -> Path:
    """Train an interpolated modified Kneser-Ney n-gram model on `texts` and write it as ARPA.

    `texts` are documents (each line a sentence, tokenised by `lm_tokens`). Writes `out_path`
    atomically (plain text; a `.gz` suffix writes gzip). If `info` is a dict it receives
    sentences, tokens, vocab size, n-gram counts per order and the discounts used.
    Everything is counted in memory: meant for reference corpora of up to some million sentences.
    """
    if order < 1:
        raise ValueError(f"order={order} must be >= 1 (3 is a good CPU-cheap choice)")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k]: raw counts of k-grams
    n_sent = n_tok = 0
    for text in texts:
        for sent in sentences(text):
            if not sent:
                continue
            toks = (BOS, *sent, EOS)
            n_sent += 1
            n_tok += len(sent)
            for k in range(1, order + 1):
                ck = counts[k]
                for i in range(len(toks) - k + 1):
                    ck[toks[i:i + k]] += 1
    if n_sent == 0:
        raise CurateError("reference-lm: the given text has no tokens; give files with text in them")

    # Adjusted counts: raw at the highest order and for n-grams that start with <s> (nothing can precede
    # them), else the number of distinct left extensions (Kneser-Ney continuation counts).
    adjusted: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
    adjusted[order] = dict(counts[order])
    for k in range(order - 1, 0, -1):
        cont: Counter = Counter()
        for g in counts[k + 1]:
            cont[g[1:]] += 1
        adjusted[k] = {g: (c if g[0] == BOS else cont[g]) for g, c in counts[k].items()}
    adjusted[1].setdefault((UNK,), 0)

    vocab = [g[0] for g in adjusted[1] if g[0] != BOS]  # the words the model predicts (with </s>, <unk>)
    discounts: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
    fell_back = []
    for k in range(1, order + 1):
        d, fb = _discounts(adjusted[k])
        discounts.append(d)
        fell_back.append(fb)

    # Interpolated probabilities, lowest order first; gamma[k][h] = interpolation weight of context h
    # (the ARPA backoff of h), from the order-k n-grams h+w.
    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    gamma: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 2)]
    for k in range(1, order + 1):
        d1, d2, d3 = discounts[k]
        total: dict[tuple[str, ...], float] = defaultdict(float)
        mass: dict[tuple[str, ...], float] = defaultdict(float)  # discounted mass per context
        for g, a in adjusted[k].items():
            if g == (BOS,):
                continue
            h = g[:-1]
            total[h] += a
            mass[h] += 0.0 if a == 0 else (d1 if a == 1 else d2 if a == 2 else d3)
        for h in total:
            gamma[k][h] = mass[h] / total[h]
        uniform = 1.0 / len(vocab)
        pk = prob[k]
        for g, a in adjusted[k].items():
            if g == (BOS,):
                continue
            h = g[:-1]
            disc = 0.0 if a == 0 else (d1 if a == 1 else d2 if a == 2 else d3)
            lower = uniform if k == 1 else prob[k - 1][g[1:]]
            pk[g] = (a - disc) / total[h] + gamma[k][h] * lower
    # A context that never continues at the next order keeps backoff 1 (log10 0).
    _write_arpa(out_path, order, prob, gamma)
    if info is not None:
        info.update({"sentences": n_sent, "tokens": n_tok, "vocab": len(vocab),
                     "ngrams": [len(prob[k]) + (1 if k == 1 else 0) for k in range(1, order + 1)],
                     "discounts": [list(discounts[k]) for k in range(1, order + 1)],
                     "discount_fallback": fell_back, "tokenizer": TOKENIZER})
    return Path(out_path)


def _write_arpa(out_path: Path, order: int, prob: list[dict], gamma: list[dict]) -> None:
    out_path = Path(out_path)
    sizes = [len(prob[k]) + (1 if k == 1 else 0) for k in range(1, order + 1)]  # +1: <s>
    with atomic_open(out_path, "wb") as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if out_path.suffix == ".gz" else None
        f: IO[str] = io.TextIOWrapper(gz or raw, encoding="utf-8", newline="\n")
        f.write("\\data\\\n")
        for k, n in enumerate(sizes, 1):
            f.write(f"ngram {k}={n}\n")
        for k in range(1, order + 1):
            f.write(f"\n\\{k}-grams:\n")
            nxt = gamma[k + 1] if k < order else {}
            entries = sorted(prob[k].items())
            if k == 1:
                entries = [((BOS,), None)] + entries
            for g, p in entries:
                lp = -99.0 if p is None else math.log10(p)
                line = f"{lp:.7g}\t{' '.join(g)}"
                if g in nxt and nxt[g] > 0:
                    line += f"\t{math.log10(nxt[g]):.7g}"
                elif k < order and g in nxt:  # no discounted mass (all counts 0): backoff weight 0
                    line += "\t-99"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
        f.flush()
        f.detach()
        if gz is not None:
            gz.close()


# -- scorers -----------------------------------------------------------------------------------

class Scorer:
    """Scores documents by perplexity under a reference model (lower = more like the reference)."""

    kind = "base"

    def perplexity(self, text: str) -> float:
        return self.perplexities([text])[0]

    def perplexities(self, texts: Sequence[str]) -> list[float]:
        return [self.perplexity(t) for t in texts]


class ArpaScorer(Scorer):
    """Our own ARPA reader and backoff scorer (pure Python; the `kenlm` package is faster)."""

    kind = "arpa"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.order, self.logp, self.backoff = read_arpa(self.path)

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context) by ARPA backoff; unknown words are <unk>."""
        logp, backoff = self.logp, self.backoff
        if (word,) not in logp:
            word = UNK
        ctx = tuple(context)[-(self.order - 1):] if self.order > 1 else ()  # callers pass a short context
        acc = 0.0
        for start in range(len(ctx) + 1):
            h = ctx[start:]
            g = h + (word,)
            if g in logp:
                return acc + logp[g]
            acc += backoff.get(h, 0.0)
        return acc + logp.get((UNK,), -99.0)  # only without an <unk> entry

    def sentence_log10(self, tokens: Sequence[str]) -> float:
        """Sum of log10 p over the tokens and the closing </s>, starting after <s>."""
        keep = self.order - 1  # context words that matter
        ctx: tuple[str, ...] = (BOS,) if keep else ()
        total = 0.0
        for w in (*tokens, EOS):
            total += self.log10_prob(ctx, w)
            if keep:
                ctx = (*ctx, w if (w,) in self.logp else UNK)[-keep:]
        return total

    def perplexity(self, text: str) -> float:
        sents = sentences(text)
        total = sum(self.sentence_log10(s) for s in sents)
        n = sum(len(s) + 1 for s in sents)
        return float(10.0 ** (-total / n))


def read_arpa(path: Path) -> tuple[int, dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Parse an ARPA file (plain or .gz): (order, log10 probs, log10 backoffs), checking its structure.

    Raises CurateError naming the line when the file is not valid ARPA (missing header, a count
    that does not match its section, a malformed entry).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    logp: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    declared: dict[int, int] = {}
    seen: dict[int, int] = {}
    section: int | None = None  # 0: \data\ header; k: k-grams
    ended = False
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            if line == "\\data\\":
                section = 0
                continue
            if line == "\\end\\":
                ended = True
                break
            m = re.fullmatch(r"\\(\d+)-grams:", line)
            if m:
                section = int(m.group(1))
                if section not in declared:
                    raise CurateError(f"{where}: section {line} has no 'ngram {section}=' count in the header")
                seen[section] = 0
                continue
            if section is None:
                raise CurateError(f"{where}: text before the \\data\\ header; is {path.name} an ARPA file?")
            if section == 0:
                m = re.fullmatch(r"ngram (\d+)=(\d+)", line.strip())
                if not m:
                    raise CurateError(f"{where}: expected 'ngram N=COUNT' in the \\data\\ header, got {line[:60]!r}")
                declared[int(m.group(1))] = int(m.group(2))
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            try:
                lp = float(parts[0])
                if "\t" in line:
                    words = tuple(parts[1].split())
                    bo = float(parts[2]) if len(parts) > 2 else None
                else:
                    words = tuple(parts[1:1 + section])
                    bo = float(parts[1 + section]) if len(parts) > 1 + section else None
            except (IndexError, ValueError):
                raise CurateError(f"{where}: malformed {section}-gram entry {line[:80]!r}") from None
            if len(words) != section:
                raise CurateError(f"{where}: a {section}-gram entry has {len(words)} words: {line[:80]!r}")
            logp[words] = lp
            if bo is not None:
                backoff[words] = bo
            seen[section] += 1
    if not declared:
        raise CurateError(f"{path}: no \\data\\ header; not an ARPA language model")
    if not ended:
        raise CurateError(f"{path}: no \\end\\ line; the file is truncated")
    for k, n in declared.items():
        if seen.get(k, 0) != n:
            raise CurateError(f"{path}: header says ngram {k}={n} but the \\{k}-grams: section has {seen.get(k, 0)}")
    return max(declared), logp, backoff


class KenLMScorer(Scorer):
    """A KenLM model (ARPA or binary) through the `kenlm` package, with our tokenisation."""

    kind = "kenlm"

    def __init__(self, path: Path) -> None:
        import kenlm  # optional dependency: pip install kenlm

        self.path = Path(path)
        self.model = kenlm.Model(str(self.path))

    def perplexity(self, text: str) -> float:
        sents = sentences(text)
        total = sum(self.model.score(" ".join(s), bos=True, eos=True) for s in sents)
        n = sum(len(s) + 1 for s in sents)
        return float(10.0 ** (-total / n))


class CausalLMScorer(Scorer):
    """Any local Hugging Face causal LM folder (e.g. a gristmill base model): exp(mean token NLL).

    Each text is scored from a start token (bos, else eos, as between documents in pretraining)
    and truncated to `max_tokens`. Loaded with local_files_only and trust_remote_code off.
    """

    kind = "causal-lm"

    def __init__(self, path: Path, *, max_tokens: int = 1024, batch_size: int = 8, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
        self.model.to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_tokens
        self.max_tokens = max(2, min(max_tokens, int(limit)))
        self.batch_size = batch_size
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.start_id = start
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.start_id is not None:
            ids = [self.start_id] + ids
        if len(ids) < 2:  # nothing to predict: score the end of text instead
            ids = ids + [self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.pad_id]
        return ids[: self.max_tokens]

    def perplexities(self, texts: Sequence[str]) -> list[float]:
        import torch

        encoded = [self._ids(t) for t in texts]
        out = [float("nan")] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths per batch
        with torch.no_grad():
            for s in range(0, len(order), self.batch_size):
                idx = order[s: s + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[r, : len(encoded[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
                logp = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts positions 1..T-1
                tgt = ids[:, 1:]
                nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
                m = mask[:, 1:].float()
                mean = (nll * m).sum(1) / m.sum(1).clamp(min=1)
                for r, i in enumerate(idx):
                    out[i] = float(torch.exp(mean[r]))
        return out


def _model_file_in(folder: Path) -> Path:
    if (folder / MANIFEST_NAME).is_file():
        models = read_manifest(folder).outputs_of("model")
        if len(models) == 1:
            return folder / models[0].path
    found = [p for pat in ("*.arpa", "*.arpa.gz", "*.bin", "*.klm", "*.binary") for p in sorted(folder.glob(pat))]
    if len(found) != 1:
        raise CurateError(f"{folder}: expected one reference model here (a causal LM folder with config.json, or "
                          f"one .arpa/.arpa.gz/.bin file); found {[p.name for p in found] or 'none'}")
    return found[0]


def load_scorer(path: Path, *, prefer_kenlm: bool = True, **causal_lm_options) -> Scorer:
    """A scorer for a reference model at `path`.

    - a folder with config.json: a Hugging Face causal LM (CausalLMScorer; options: max_tokens,
      batch_size, device);
    - a `gristmill reference-lm` folder, or a folder holding one model file: that file;
    - an `.arpa` / `.arpa.gz` file: KenLM when `kenlm` is importable (and prefer_kenlm), else our reader;
    - a KenLM binary (`.bin`, `.klm`, `.binary`): needs the `kenlm` package.
    """
    path = Path(path)
    if not path.exists():
        raise CurateError(f"reference model {path} does not exist; train one with `gristmill curate "
                          f"reference-lm --text FILE... --out DIR` or give a causal LM folder")
    if path.is_dir():
        if (path / "config.json").is_file():
            return CausalLMScorer(path, **causal_lm_options)
        path = _model_file_in(path)
    has_kenlm = _kenlm_available()
    name = path.name.lower()
    if name.endswith((".arpa", ".arpa.gz")):
        return KenLMScorer(path) if (has_kenlm and prefer_kenlm) else ArpaScorer(path)
    if has_kenlm:
        return KenLMScorer(path)
    raise CurateError(f"{path}: a KenLM binary model needs the `kenlm` package (pip install kenlm); "
                      f"or give an ARPA file, which gristmill reads itself")


def _kenlm_available() -> bool:
    try:
        import kenlm  # noqa: F401
    except ImportError:
        return False
    return True


# -- cutoffs -----------------------------------------------------------------------------------

def percentile_bounds(values: Iterable[float], low_pct: float, high_pct: float) -> tuple[float, float]:
    """CCNet-style cutoffs computed on the corpus: the low_pct-th and high_pct-th percentiles.

    Non-finite values (a document that could not be scored) are left out. Linear interpolation
    between order statistics (NumPy's default).
    """
    if not 0.0 <= low_pct <= high_pct <= 100.0:
        raise ValueError(f"percentiles low={low_pct}, high={high_pct} must satisfy 0 <= low <= high <= 100")
    # an array as it is (finalize passes one per corpus: a list of it would be a Python float per document)
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("percentile_bounds needs at least one finite perplexity")
    low, high = np.percentile(arr, [low_pct, high_pct])
    return float(low), float(high)


def perplexity_verdict(ppl: float, low: float | None, high: float | None) -> tuple[bool, str]:
    """(keep, reason): below `low` -> "perplexity_too_low" (repetitive, templated); above `high` (or not
    finite) -> "perplexity_too_high" (incoherent); a None bound is not checked."""
    if not math.isfinite(ppl) or (high is not None and ppl > high):
        return False, "perplexity_too_high"
    if low is not None and ppl < low:
        return False, "perplexity_too_low"
    return True, ""
