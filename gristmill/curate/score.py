"""The quality score: one number per document from the signals curate computes, and its percentile cut.

Signals (`FEATURES`, each with the direction a better document moves it, `SIGNS`):

    log_words        +  log(1 + words)                       (length: AUC .763 alone on human labels)
    classifier       +  logit of the fastText P(__label__hq)  (quality.py)
    log_perplexity   -  log perplexity under the reference LM (only when the model was trained with one)
    alpha_words      +  share of words with a letter          (Gopher's non-alpha ratio)
    stop_words       +  share of words that are common function words (prose, not lists)
    punct_lines      +  share of non-empty lines ending in terminal punctuation (FineWeb's line_punct)
    short_lines      -  share of non-empty lines under 30 characters (menus, link lists)
    dup_lines        -  share of characters in lines that repeat an earlier line (Gopher repetition)
    words_per_line   +  log mean words per non-empty line

The combiner (`Combiner`) starts from a documented formula, the unit-weight sum of the signals
standardised on raw web text, sum(sign_k * z_k), and lets data move it: a logistic regression fitted
on the quality-model stage's held-out documents (the fastText model never saw them, so its
probability there is honest), with balanced class weights (the class balance of the training files
does not move it), an L2 pull of strength `PRIOR_STRENGTH` towards the unit weights, and each weight
bounded to its sign: a signal can help or be ignored, never count backwards. The pull and the
bounds matter because the positive / negative split is not what curate filters: reference text cut
one document per line makes every positive one line long (length then "predicts" the wrong class)
and the classifier separates its own task almost perfectly, so a free fit would put all weight on
the classifier, which ranks human-judged web documents below length. The length weight is held at or
above `LENGTH_FLOOR` (its prior weight), so the score never loses the signal that human labels
reward most. z = (x - mean) / std with mean and std of the held-out negatives (std at least
`STD_FLOOR`). With a reference LM the perplexity weight is learned on documents that LM was
usually trained on (the positives are its text), so it is too confident there; the bound and the
pull keep it in check, not out.

The score is sigmoid(w . z + b), a probability of "reference-like" under balanced classes. Curate
keeps the top `quality.keep_percent` % of its own corpus by it (the cut is a percentile of the
corpus's scores, CCNet / DCLM style), so no absolute threshold depends on the training balance.
Saved as `combiner.json` beside the fastText model (plain numbers, no pickle).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gristmill.curate import CurateError

FORMAT = "gristmill.quality-combiner/1"
COMBINER_NAME = "combiner.json"
FEATURES = ("log_words", "classifier", "log_perplexity", "alpha_words", "stop_words", "punct_lines",
            "short_lines", "dup_lines", "words_per_line")
SIGNS = {"log_words": 1, "classifier": 1, "log_perplexity": -1, "alpha_words": 1, "stop_words": 1,
         "punct_lines": 1, "short_lines": -1, "dup_lines": -1, "words_per_line": 1}
TEXT_FEATURES = tuple(f for f in FEATURES if f not in ("classifier", "log_perplexity"))
LENGTH_FLOOR = 1.0
PRIOR_STRENGTH = 1.0
STD_FLOOR = 0.05
_WORD = re.compile(r"\w+")
_LETTER = re.compile(r"[^\W\d_]")
_TERMINAL = tuple(".!?\"'”’)…:;。！？")
_STOP = frozenset("the be to of and a in that have i it for not on with he as you do at this but his by from "
                  "they we say her she or an will my one all would there their what so up out if about who "
                  "is are was were been has had".split())


def text_features(text: str) -> dict[str, float]:
    """The signals computed from the text alone (see the module docstring)."""
    words = _WORD.findall(text)
    n = len(words)
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    nl = max(1, len(lines))
    seen: set[str] = set()
    dup_chars = 0
    for ln in lines:
        if ln in seen:
            dup_chars += len(ln)
        seen.add(ln)
    total_chars = sum(len(ln) for ln in lines)
    return {
        "log_words": math.log1p(n),
        "alpha_words": sum(1 for w in words if _LETTER.search(w)) / n if n else 0.0,
        "stop_words": sum(1 for w in words if w.lower() in _STOP) / n if n else 0.0,
        "punct_lines": sum(1 for ln in lines if ln.endswith(_TERMINAL)) / nl,
        "short_lines": sum(1 for ln in lines if len(ln) < 30) / nl,
        "dup_lines": dup_chars / total_chars if total_chars else 0.0,
        "words_per_line": math.log1p(n / nl),
    }


def logit(p: float | np.ndarray, eps: float = 1e-4):
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def feature_matrix(texts: Sequence[str], features: Sequence[str], classifier: Sequence[float] | None = None,
                   perplexity: Sequence[float] | None = None) -> np.ndarray:
    """(documents, features) float64 in the order of `features`. A non-finite perplexity (an empty
    text) is taken as very high (1e6)."""
    x = np.zeros((len(texts), len(features)), dtype=np.float64)
    col = {f: j for j, f in enumerate(features)}
    need_text = [f for f in features if f in TEXT_FEATURES]
    if need_text:
        for i, t in enumerate(texts):
            tf = text_features(t)
            for f in need_text:
                x[i, col[f]] = tf[f]
    if "classifier" in col:
        if classifier is None:
            raise CurateError("the quality score needs the classifier's probabilities")
        x[:, col["classifier"]] = logit(np.asarray(classifier, dtype=np.float64))
    if "log_perplexity" in col:
        if perplexity is None:
            raise CurateError("the quality score was trained with a reference LM's perplexity; give curate the "
                              "same reference model (input role \"reference\")")
        ppl = np.asarray(perplexity, dtype=np.float64)
        x[:, col["log_perplexity"]] = np.log(np.where(np.isfinite(ppl) & (ppl > 0), ppl, 1e6))
    return x


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """ROC AUC (ties count half), from ranks; NaN when a class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class Combiner:
    """sigmoid(weights . (x - mean) / std + bias) over `features` (see the module docstring)."""

    features: list[str]
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    reference: str | None = None  # identity of the reference LM the perplexity feature needs
    metrics: dict = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def scores(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(x)))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "features": self.features, "signs": {f: SIGNS[f] for f in self.features},
                "mean": self.mean, "std": self.std, "weights": self.weights, "bias": self.bias,
                "length_floor": LENGTH_FLOOR, "reference": self.reference, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict, where: str = COMBINER_NAME) -> "Combiner":
        if d.get("format") != FORMAT:
            raise CurateError(f"{where}: not a quality combiner ({FORMAT}); retrain with `gristmill "
                              f"quality-model`")
        unknown = [f for f in d["features"] if f not in FEATURES]
        if unknown:
            raise CurateError(f"{where}: unknown features {unknown}; retrain with this gristmill version")
        return cls(features=list(d["features"]), mean=list(d["mean"]), std=list(d["std"]),
                   weights=list(d["weights"]), bias=float(d["bias"]), reference=d.get("reference"),
                   metrics=d.get("metrics", {}))


def fit_combiner(x: np.ndarray, y: np.ndarray, features: Sequence[str], *, l2: float = PRIOR_STRENGTH,
                 length_floor: float = LENGTH_FLOOR) -> Combiner:
    """Sign-bounded, class-balanced logistic regression (L-BFGS-B) on x standardised by the negatives
    (raw web: the kind of text curate filters; spreads below STD_FLOOR are raised to it), with an L2
    pull of strength `l2` towards the unit-weight formula (weight = sign)."""
    from scipy.optimize import minimize

    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    if n_pos == 0 or n_neg == 0:
        raise CurateError("the quality combiner needs held-out documents of both classes; raise "
                          "quality-model.holdout or give more documents")
    web = x[y == 0]
    mean = web.mean(axis=0)
    std = np.maximum(web.std(axis=0), STD_FLOOR)
    z = (x - mean) / std
    w0 = np.array([float(SIGNS[f]) for f in features])
    sw = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)  # each class weighs one half

    def loss(theta: np.ndarray):
        w, b = theta[:-1], theta[-1]
        t = z @ w + b
        # log(1 + exp(-t)) for y = 1, log(1 + exp(t)) for y = 0, stably
        s = np.where(y == 1, -t, t)
        ls = np.logaddexp(0.0, s)
        p = 1.0 / (1.0 + np.exp(-t))
        g = sw * (p - y)
        d = w - w0
        return float((sw * ls).sum() + 0.5 * l2 * d @ d), np.concatenate([z.T @ g + l2 * d, [g.sum()]])

    bounds = []
    for f in features:
        lo, hi = (0.0, None) if SIGNS[f] > 0 else (None, 0.0)
        if f == "log_words":
            lo = max(lo, length_floor)
        bounds.append((lo, hi))
    bounds.append((None, None))
    theta0 = np.append(np.maximum(w0, [b[0] if b[0] is not None else -np.inf for b in bounds[:-1]]), 0.0)
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    w, b = res.x[:-1], res.x[-1]
    return Combiner(features=list(features), mean=mean.tolist(), std=std.tolist(),
                    weights=[float(v) for v in w], bias=float(b))


def signal_aucs(x: np.ndarray, y: np.ndarray, features: Sequence[str], *, folds: int = 5, seed: int = 0,
                **fit_options) -> dict[str, float]:
    """AUC of each signal alone (oriented by its sign) and of the combined score, the latter from
    `folds`-fold cross-validation (each document scored by a combiner that did not see it); None
    where too few documents of a class leave nothing to rank."""
    y = np.asarray(y).astype(int)
    out = {f: auc(SIGNS[f] * x[:, j], y) for j, f in enumerate(features)}
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):  # stratified
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    pred = np.full(len(y), np.nan)
    for k in range(folds):
        test, train = fold == k, fold != k
        if not test.any() or len(set(y[train].tolist())) < 2:
            continue
        pred[test] = fit_combiner(x[train], y[train], features, **fit_options).logits(x[test])
    ok = np.isfinite(pred)
    out["combined"] = auc(pred[ok], y[ok])
    return {k: (round(v, 4) if math.isfinite(v) else None) for k, v in out.items()}  # None: too few documents


def load_combiner(folder: str | Path) -> Combiner | None:
    """The combiner saved in a quality-model folder, or None (a bare fastText model: the score is its
    probability)."""
    p = Path(folder) / COMBINER_NAME
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CurateError(f"{p}: unreadable ({e}); retrain with `gristmill quality-model`") from None
    return Combiner.from_dict(d, str(p))


def reference_identity(path: str | Path) -> str:
    """What names a reference LM across runs: its stage id (a reference-lm folder) or its sha256."""
    from gristmill.manifests import MANIFEST_NAME, read_manifest
    from gristmill.manifests.hashing import sha256_file, sha256_tree

    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return f"stage:{read_manifest(path).id}"
    if path.is_dir():
        return f"sha256:{sha256_tree(path)[0]}"
    return f"sha256:{sha256_file(path)}"


class QualityScorer:
    """The score curate filters by: the combiner over the classifier (and perplexity) and text signals,
    or, for a bare fastText model without a combiner, the classifier's probability."""

    def __init__(self, quality_path: str | Path, reference_path: str | Path | None = None) -> None:
        from gristmill.curate.quality import load_quality

        self.classifier = load_quality(quality_path)
        folder = Path(quality_path) if Path(quality_path).is_dir() else None
        self.combiner = load_combiner(folder) if folder is not None else None
        c = self.combiner
        if c is not None and "log_perplexity" in c.features:
            have = reference_identity(reference_path) if reference_path else None
            if have != c.reference:
                raise CurateError(f"{quality_path}: its quality score was trained with the perplexity of reference "
                                  f"LM {c.reference}, but curate's reference input is "
                                  f"{reference_path or 'missing'} ({have}); give curate that reference model, or "
                                  f"retrain the quality model with this one")

    @property
    def needs_perplexity(self) -> bool:
        return self.combiner is not None and "log_perplexity" in self.combiner.features

    def scores(self, texts: Sequence[str], perplexity: Sequence[float] | None = None) -> list[float]:
        probs = self.classifier.scores(texts)
        if self.combiner is None:
            return probs
        x = feature_matrix(texts, self.combiner.features, probs, perplexity)
        return [float(s) for s in self.combiner.scores(x)]


def percentile_cutoff(scores: np.ndarray, keep_percent: float) -> float:
    """The score a document needs to be in the top `keep_percent` % of `scores` (NaN = lowest):
    the k-th highest score, k = round(n * keep_percent / 100); every document at or above it is kept,
    so ties at the cut keep a few more than k. 100 keeps everything (-inf); 0 keeps nothing (+inf)."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isfinite(s), s, -np.inf)
    k = int(round(len(s) * keep_percent / 100.0))
    if keep_percent >= 100 or len(s) == 0:
        return float("-inf")
    if k <= 0:
        return float("inf")
    return float(np.sort(s)[::-1][k - 1])
