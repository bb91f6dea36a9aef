"""The quality score: its percentile cut keeps the share asked for, the combined score ranks better than
each signal alone, the combiner is saved, loaded and tied to its reference LM, and config errors name the field."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from gristmill.config import build
from gristmill.curate import CurateError
from gristmill.curate.config import CurateConfig, QualityConfig
from gristmill.curate.quality import quality_verdict, train_quality
from gristmill.curate.score import (COMBINER_NAME, FEATURES, QualityScorer, auc, feature_matrix, fit_combiner,
                                    load_combiner, percentile_cutoff, signal_aucs, text_features)


def _kept(scores: np.ndarray, keep_percent: float) -> int:
    cut = percentile_cutoff(scores, keep_percent)
    return sum(quality_verdict(float(s), cut)[0] for s in scores)


def test_percentile_cut_keeps_the_top_share():
    rng = np.random.default_rng(0)
    scores = rng.random(1000).astype(np.float32)
    assert _kept(scores, 70.0) == 700
    assert _kept(scores, 5.0) == 50 and _kept(scores, 100.0) == 1000
    # the kept ones are the highest
    cut = percentile_cutoff(scores, 70.0)
    assert (np.sort(scores)[::-1][:700] >= cut).all() and (np.sort(scores)[::-1][700:] < cut).all()
    # ties at the cut are all kept: a few more than asked, never fewer
    tied = np.round(scores, 1)
    n = _kept(tied, 70.0)
    assert 700 <= n <= 700 + int((tied == percentile_cutoff(tied, 70.0)).sum())
    # unscored documents (NaN) rank last
    with_nan = scores.copy()
    with_nan[:100] = np.nan
    assert _kept(with_nan, 50.0) == 500 and all(not quality_verdict(float(s), percentile_cutoff(with_nan, 50.0))[0]
                                                for s in with_nan[:100])
    # the same share whatever the scale of the scores (no absolute threshold)
    assert _kept(scores * 0.01, 70.0) == 700 and _kept(scores * 0.01 + 0.98, 70.0) == 700


def _synthetic(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Documents whose label depends on length and on the classifier probability in equal parts, with noise."""
    rng = random.Random(seed)
    texts, probs, labels = [], [], []
    for _ in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        y = int(a + b + rng.gauss(0, 0.7) > 0)
        words = max(5, int(math.exp(5 + 0.8 * a)))
        texts.append(" ".join(rng.choice(["the", "river", "town", "and", "of", "market", "stone"])
                              for _ in range(words)) + ".")
        probs.append(1 / (1 + math.exp(-1.5 * b)))
        labels.append(y)
    return texts, np.asarray(probs), np.asarray(labels)


def test_combined_score_beats_length_and_classifier_alone():
    feats = [f for f in FEATURES if f != "log_perplexity"]
    tr_texts, tr_p, tr_y = _synthetic(800, 0)
    te_texts, te_p, te_y = _synthetic(800, 1)
    combiner = fit_combiner(feature_matrix(tr_texts, feats, tr_p), tr_y, feats)
    x = feature_matrix(te_texts, feats, te_p)
    combined = auc(combiner.scores(x), te_y)
    length = auc(x[:, feats.index("log_words")], te_y)
    classifier = auc(te_p, te_y)
    assert 0.65 < length < 0.9 and 0.65 < classifier < 0.9
    assert combined > max(length, classifier) + 0.05
    # the weights follow the signs and length keeps at least its floor
    w = dict(zip(combiner.features, combiner.weights))
    assert w["log_words"] >= 1.0 and w["classifier"] > 0 and w["short_lines"] <= 0 and w["dup_lines"] <= 0
    table = signal_aucs(feature_matrix(tr_texts, feats, tr_p), tr_y, feats)
    assert table["combined"] > max(table["log_words"], table["classifier"])


def test_a_signal_the_training_split_reverses_cannot_count_backwards():
    """Positives one line each, negatives whole pages: length 'predicts' the wrong class in training,
    yet its weight stays at its floor and the score still rises with length."""
    feats = ["log_words", "classifier"]
    rng = np.random.default_rng(0)
    n = 400
    y = np.r_[np.ones(n), np.zeros(n)]
    x = np.c_[np.r_[rng.normal(3, 0.5, n), rng.normal(6, 0.5, n)], np.r_[rng.normal(2, 1, n), rng.normal(-2, 1, n)]]
    c = fit_combiner(x, y, feats)
    assert c.weights[0] == pytest.approx(1.0) and c.weights[1] > 0
    assert c.scores(np.array([[7.0, 0.0]]))[0] > c.scores(np.array([[3.0, 0.0]]))[0]


def test_text_features():
    good = "The river runs past the town. It was a cold day, and the market was full.\nPeople came from far away."
    bad = "Home\nHome\nLogin\nCart\n#1 deals 2024"
    g, b = text_features(good), text_features(bad)
    assert g["log_words"] > b["log_words"] and g["punct_lines"] == 1.0 and b["punct_lines"] == 0.0
    assert b["short_lines"] == 1.0 and b["dup_lines"] > 0 and g["dup_lines"] == 0
    assert g["stop_words"] > b["stop_words"]
    assert text_features("")["log_words"] == 0.0


def test_train_quality_saves_a_combiner_that_curate_scores_with(tmp_path):
    from gristmill.curate.perplexity import train_ngram

    rng = random.Random(0)
    vocab = ["river", "town", "market", "winter", "stone", "bridge", "garden", "harbour", "teacher", "window"]

    def prose():
        return " ".join(f"The {rng.choice(vocab)} was near the {rng.choice(vocab)} and the {rng.choice(vocab)}."
                        for _ in range(rng.randint(2, 12)))

    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.jsonl"
    pos.write_text("\n".join(prose() for _ in range(200)) + "\n")
    neg.write_text("".join(json.dumps({"text": "\n".join(rng.choice(["Home", "Login", "Cart", "Sale", "Contact us"])
                                                          for _ in range(rng.randint(3, 30)))}) + "\n"
                           for _ in range(200)))
    ref = tmp_path / "ref.arpa"
    train_ngram([pos.read_text()], ref, order=2)
    out = tmp_path / "qm"
    train_quality([pos], [neg], out, epochs=3, dim=8, bucket=5000, reference=ref)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["signals_auc"]) == set(FEATURES) | {"combined"}
    combiner = load_combiner(out)
    assert combiner is not None and combiner.features == list(FEATURES)
    assert json.loads((out / COMBINER_NAME).read_text())["format"] == "gristmill.quality-combiner/1"
    # curate scores with it given the same reference LM, and refuses another or none
    scorer = QualityScorer(out, ref)
    s = scorer.scores([prose(), "Home\nLogin\nCart"], [20.0, 900.0])
    assert 0 <= s[1] < s[0] <= 1
    other = tmp_path / "other.arpa"
    train_ngram(["something else entirely ."], other, order=2)
    with pytest.raises(CurateError, match="reference"):
        QualityScorer(out, other)
    with pytest.raises(CurateError, match="missing"):
        QualityScorer(out, None)
    # a bare fastText model (no combiner): its probability is the score
    bare = QualityScorer(out / "model.bin")
    assert bare.combiner is None and bare.scores(["Home"]) == bare.classifier.scores(["Home"])


def test_quality_config_names_keep_percent():
    assert QualityConfig().keep_percent == 70.0
    for bad in (0.0, -5.0, 120.0):
        with pytest.raises(ValueError, match=r"curate\.quality\.keep_percent"):
            QualityConfig(keep_percent=bad)
    assert build(CurateConfig, {"quality": {"keep_percent": 35}}, section="curate").quality.keep_percent == 35
    # the old absolute probability threshold is gone; a recipe that still sets it is told so by name
    with pytest.raises(Exception, match="threshold"):
        build(CurateConfig, {"quality": {"threshold": 0.5}}, section="curate")
