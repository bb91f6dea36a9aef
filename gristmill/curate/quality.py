"""Quality classifier: a fastText model of reference-like (__label__hq) vs raw web (__label__lq) text.

The FineWeb-Edu / DCLM idea at CPU cost: train on reference text (positives) against raw web text
(negatives). Curate does not filter by its probability alone: score.py combines it with length,
perplexity and text signals into the quality score, and curate keeps a top percentile by that.

Input files (`read_texts`): `.jsonl` / `.jsonl.gz` / `.jsonl.zst` with a "text" field per line, or
`.txt` / `.txt.gz` where, by default, each non-empty line is one document (`txt_docs="line"`);
`txt_docs="paragraph"` makes each blank-line-separated block one document instead (hard-wrapped
books). Text that is not UTF-8 is decoded in the charset detected as for web pages (e.g. cp1252).
The model file is fastText's own binary format (`model.bin`; not a pickle).

Text given to fastText (`classifier_text`): NFKC, lowercase, digits -> "0", tokens (`\\w+` runs and
single punctuation marks) joined by spaces on one line, at most `max_tokens` tokens.
"""
from __future__ import annotations

import json
import os
import random
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterator, Literal, Sequence

from gristmill.curate import CurateError
from gristmill.curate.config import QualityModelConfig
from gristmill.curate.score import COMBINER_NAME
from gristmill.manifests import MANIFEST_NAME, atomic_write_json, read_manifest

HQ, LQ = "__label__hq", "__label__lq"
MAX_TOKENS = 2000
# fastText 0.9.x initialises its input matrix in ten blocks, one per training thread
# (DenseMatrix::uniformThread), on memory it allocates uninitialised (posix_memalign): with fewer
# than 11 threads part of the matrix keeps whatever the heap held, sometimes NaN ("Encountered NaN"
# even at tiny learning rates). 11 threads initialise every block, the remainder included. The price:
# Hogwild training, so two runs do not give bit-identical models.
_FASTTEXT_THREADS = 11
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGIT = re.compile(r"\d")


def classifier_text(text: str, max_tokens: int = MAX_TOKENS) -> str:
    """The one-line token string the classifier sees for a document (training and scoring alike)."""
    tokens = _TOKEN.findall(_DIGIT.sub("0", unicodedata.normalize("NFKC", text).lower()))
    return " ".join(tokens[:max_tokens])


def _read_decoded(path: Path) -> str:
    """A training file's whole text (decompressed), its charset found as for web pages (decode_html):
    UTF-8 when it is valid UTF-8, else a declared or cchardet-detected charset, e.g. cp1252.

    The whole file at once: a charset is guessed from a large sample, not a line, and training
    holds every document in memory anyway. CRLF and CR line ends become LF, as in text-mode files."""
    from gristmill.curate.readers import _open_text_stream, decode_html

    with _open_text_stream(str(path)) as f:
        payload = f.read()
    text, _ = decode_html(payload)
    if text is None:
        # decode_html takes valid UTF-8 first, so strict UTF-8 fails here, at the first bad byte
        start = 0
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as e:
            start = e.start
        line = payload.count(b"\n", 0, start) + 1
        raise CurateError(f"{path}:{line}: byte 0x{payload[start]:02x} is not UTF-8 "
                          f"and no other charset fits the file; convert it to UTF-8 (e.g. iconv -f <its charset> "
                          f"-t utf-8)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_texts(path: str | Path, txt_docs: Literal["line", "paragraph"] = "line",
               field: str = "text") -> Iterator[str]:
    """Documents of one training file (see the module docstring for the formats).

    Text that is not UTF-8 is decoded in the charset decode_html detects; a file no charset fits,
    or a JSONL line that is not a JSON object with a string `field`, raises CurateError naming the
    file and line. Empty documents are skipped.
    """
    path = Path(path)
    name = path.name.lower()
    stem = re.sub(r"\.(gz|zst)$", "", name)
    if not stem.endswith((".jsonl", ".ndjson", ".txt")):
        raise CurateError(f"{path}: unknown text file type; use .txt, .txt.gz, .jsonl, .jsonl.gz "
                          f"or .jsonl.zst")
    try:
        text = _read_decoded(path)
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise CurateError(f"{path}: no such file") from None
        raise CurateError(f"{path}: cannot read ({e})") from None
    # split on "\n" only: str.splitlines would also split at U+0085 or U+2028 inside a document
    if stem.endswith((".jsonl", ".ndjson")):
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CurateError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be "
                                  f"one JSON object with a {field!r} field") from None
            doc = row.get(field) if isinstance(row, dict) else None
            if not isinstance(doc, str):
                raise CurateError(f"{path}:{lineno}: no string {field!r} field in this record")
            if doc.strip():
                yield doc
    elif txt_docs == "line":
        for line in text.split("\n"):
            if line.strip():
                yield line
    else:
        for block in re.split(r"\n[ \t]*\n", text):
            if block.strip():
                yield block.strip("\n")


# The defaults of train_quality are QualityModelConfig's, so a call, the command and a recipe train the same model.
_DEFAULTS = QualityModelConfig()


def train_quality(positive: Sequence[str | Path], negative: Sequence[str | Path], out_dir: str | Path, *,
                  epochs: int = _DEFAULTS.epochs, lr: float = _DEFAULTS.lr, wordNgrams: int = _DEFAULTS.word_ngrams,
                  dim: int = _DEFAULTS.dim, bucket: int = _DEFAULTS.bucket, min_count: int = 1,
                  seed: int = _DEFAULTS.seed, holdout: float = _DEFAULTS.holdout,
                  txt_docs: Literal["line", "paragraph"] = _DEFAULTS.txt_docs, max_tokens: int = MAX_TOKENS,
                  reference: str | Path | None = None) -> Path:
    """Train the fastText classifier and the quality score's combiner; writes `out_dir/model.bin`,
    `out_dir/combiner.json` and `out_dir/metrics.json`, returns model.bin.

    A seeded shuffle of each class holds out `holdout` of its documents (at least one when it has
    two or more); the model is trained on the rest and metrics.json reports held-out accuracy,
    precision and recall of hq, and the class counts. The combiner (score.py) is fitted on the
    held-out documents, which the classifier never saw; `reference` (a reference LM) adds its
    perplexity as a signal, and curate must then be given the same reference model. metrics.json's
    "signals_auc" gives each signal's held-out AUC and the combined score's (cross-validated). The model size is about
    (vocabulary + bucket) * dim * 4 bytes. Training runs on 11 threads (see _FASTTEXT_THREADS),
    so retraining gives a model of the same quality but not the same bytes.
    """
    import fasttext

    out_dir = Path(out_dir)
    docs = {HQ: [d for p in positive for d in read_texts(p, txt_docs)],
            LQ: [d for p in negative for d in read_texts(p, txt_docs)]}
    for label, files in ((HQ, positive), (LQ, negative)):
        if not docs[label]:
            raise CurateError(f"quality-model: no {'positive' if label == HQ else 'negative'} documents in "
                              f"{[str(f) for f in files]}; give files with text in them")
    rng = random.Random(seed)
    train, test, test_raw = [], [], []
    for label, texts in docs.items():
        rows = [(label, classifier_text(t, max_tokens), t) for t in texts]
        rng.shuffle(rows)
        n_test = int(round(holdout * len(rows))) if len(rows) >= 2 else 0
        if holdout > 0 and len(rows) >= 2:
            n_test = max(1, n_test)
        test += [r[:2] for r in rows[:n_test]]
        test_raw += [r[2] for r in rows[:n_test]]
        train += [r[:2] for r in rows[n_test:]]
    rng.shuffle(train)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".train-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(f"{label} {text}\n" for label, text in train), encoding="utf-8")
        try:
            model = fasttext.train_supervised(input=str(train_file), epoch=epochs, lr=lr, wordNgrams=wordNgrams,
                                              dim=dim, bucket=bucket, minCount=min_count, seed=seed,
                                              thread=_FASTTEXT_THREADS,
                                              verbose=0, loss="softmax")
        except RuntimeError as e:  # fastText's "Encountered NaN": the learning rate is too high
            raise CurateError(f"quality-model: fastText training failed ({e}); lower the learning rate "
                              f"(lr={lr}, e.g. --lr {lr / 5:g})") from None
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        os.replace(tmp_model, out_dir / "model.bin")  # same folder: atomic
    qm = QualityModel(model)
    metrics: dict = {"train_documents": {"hq": sum(1 for r in train if r[0] == HQ),
                                         "lq": sum(1 for r in train if r[0] == LQ)},
                     "heldout_documents": {"hq": sum(1 for r in test if r[0] == HQ),
                                           "lq": sum(1 for r in test if r[0] == LQ)}}
    if test:
        scores = qm._scores_prepared([t for _, t in test])
        pred = [s >= 0.5 for s in scores]
        truth = [label == HQ for label, _ in test]
        tp = sum(p and t for p, t in zip(pred, truth))
        metrics.update({
            "heldout_accuracy": sum(p == t for p, t in zip(pred, truth)) / len(test),
            "heldout_precision_hq": tp / max(1, sum(pred)),
            "heldout_recall_hq": tp / max(1, sum(truth)),
        })
    (out_dir / COMBINER_NAME).unlink(missing_ok=True)
    truth = [int(label == HQ) for label, _ in test]
    if 0 < sum(truth) < len(truth):
        combiner = _fit_combiner(test_raw, truth, scores, reference, seed)
        metrics["signals_auc"] = combiner.metrics["signals_auc"]
        metrics["combiner_weights"] = dict(zip(combiner.features, [round(w, 4) for w in combiner.weights]))
        atomic_write_json(out_dir / COMBINER_NAME, combiner.to_dict())
    atomic_write_json(out_dir / "metrics.json", metrics)
    return out_dir / "model.bin"


def _fit_combiner(texts: list[str], labels: list[int], probs: list[float], reference: str | Path | None,
                  seed: int):
    """The quality score's combiner on held-out documents (see score.py), with its signals' AUCs."""
    import numpy as np

    from gristmill.curate.score import FEATURES, feature_matrix, fit_combiner, reference_identity, signal_aucs

    features = [f for f in FEATURES if reference or f != "log_perplexity"]
    ppl = None
    if reference:
        from gristmill.curate.perplexity import load_scorer

        ppl = load_scorer(Path(reference)).perplexities(texts)
    x = feature_matrix(texts, features, probs, ppl)
    y = np.asarray(labels)
    combiner = fit_combiner(x, y, features)
    combiner.reference = reference_identity(reference) if reference else None
    combiner.metrics = {"documents": {"hq": int(y.sum()), "lq": int(len(y) - y.sum())},
                        "signals_auc": signal_aucs(x, y, features, seed=seed)}
    return combiner


class QualityModel:
    """A trained classifier; `score(text)` is the probability of __label__hq (0..1)."""

    def __init__(self, model, path: Path | None = None) -> None:
        self.model = model
        self.path = path
        labels = set(model.get_labels())
        if HQ not in labels:
            raise CurateError(f"{path or 'quality model'}: has no {HQ} label (labels: {sorted(labels)}); "
                              f"train it with `gristmill quality-model`")

    def score(self, text: str) -> float:
        return self.scores([text])[0]

    def scores(self, texts: Sequence[str]) -> list[float]:
        return self._scores_prepared([classifier_text(t) for t in texts])

    def _scores_prepared(self, lines: list[str]) -> list[float]:
        if not lines:
            return []
        labels, probs = self.model.predict(lines, k=-1)
        out = []
        for labs, ps in zip(labels, probs):
            p = dict(zip(labs, ps)).get(HQ, 0.0)
            out.append(float(min(1.0, max(0.0, p))))  # fastText can return 1.00001
        return out


def load_quality(path: str | Path) -> QualityModel:
    """Load a fastText quality model: a model file, or a folder (a quality-model output) with model.bin."""
    import fasttext

    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            models = read_manifest(path).outputs_of("model")
            path = path / models[0].path if models else path / "model.bin"
        else:
            path = path / "model.bin"
    if not path.is_file():
        raise CurateError(f"quality model {path} does not exist; train one with `gristmill quality-model "
                          f"--positive FILE... --negative FILE... --out DIR`")
    try:
        model = fasttext.load_model(str(path))
    except ValueError as e:
        raise CurateError(f"{path}: not a fastText model ({e})") from None
    return QualityModel(model, path)


def quality_verdict(score: float, threshold: float) -> tuple[bool, str]:
    """(keep, reason): keep when score >= threshold (a threshold of -inf keeps everything, NaN
    included), else (False, "quality_low")."""
    return (True, "") if (score >= threshold or threshold == float("-inf")) else (False, "quality_low")
