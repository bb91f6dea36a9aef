"""Perplexity (n-gram ARPA, KenLM, causal LM) and quality-classifier scoring, and the two training commands."""
from __future__ import annotations

import dataclasses
import gzip
import inspect
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from curate_fixtures import english_page, html_response, write_warc

from gristmill.curate import CurateError
from gristmill.curate.config import QualityModelConfig
from gristmill.curate.model_stages import run_quality_model
from gristmill.curate.perplexity import (BOS, EOS, UNK, ArpaScorer, CausalLMScorer, lm_tokens, load_scorer,
                                         percentile_bounds, perplexity_verdict, read_arpa, train_ngram)
from gristmill.curate.quality import load_quality, quality_verdict, read_texts, train_quality
from gristmill.cli import main
from gristmill.manifests import read_manifest, verify

_ADJ = ["old", "young", "quiet", "small", "broken", "wooden", "northern", "busy", "careful", "bright", "narrow",
        "heavy", "gentle", "famous", "local", "ancient", "modern", "empty", "crowded", "distant"]
_NOUN = ["farmer", "teacher", "neighbour", "doctor", "team", "mayor", "student", "guide", "bridge", "boat", "school",
         "map", "field", "clock", "library", "road", "river", "market", "garden", "tower", "harbour", "mill",
         "village", "forest", "painter", "baker", "museum", "station", "letter", "window"]
_VERB = ["visited", "repaired", "described", "painted", "measured", "cleaned", "followed", "studied", "found",
         "crossed", "opened", "built", "watched", "sold", "carried", "moved"]
_PREP = ["near", "behind", "beyond", "under", "beside", "across", "inside", "around"]
_BOILERPLATE = "Click here to read more stories from our village."


def _sentence(rng: random.Random) -> str:
    c = rng.choice
    return (f"The {c(_ADJ)} {c(_NOUN)} {c(_VERB)} the {c(_ADJ)} {c(_NOUN)} {c(_PREP)} the {c(_NOUN)}."
            if rng.random() < 0.5 else f"A {c(_NOUN)} {c(_VERB)} a {c(_ADJ)} {c(_NOUN)}.")


def _document(rng: random.Random, n: int = 4) -> str:
    lines = [_sentence(rng) for _ in range(n)]
    if rng.random() < 0.3:  # like web pages: a recurring template line
        lines.append(_BOILERPLATE)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(0)
    return [_document(rng) for _ in range(400)]


@pytest.fixture(scope="module")
def arpa(tmp_path_factory, corpus) -> Path:
    path = tmp_path_factory.mktemp("lm") / "model.arpa"
    train_ngram(corpus, path, order=3)
    return path


# -- the n-gram model --------------------------------------------------------------------------

def test_lm_tokens():
    assert lm_tokens("Hello, World! It's 2019.") == ["hello", ",", "world", "!", "it", "'", "s", "0000", "."]


def test_arpa_is_valid_and_complete(arpa):
    order, logp, backoff = read_arpa(arpa)  # checks header counts against sections
    assert order == 3
    assert logp[(BOS,)] == -99.0 and (UNK,) in logp and (EOS,) in logp
    for g in logp:
        assert all(p <= 0.0 for p in [logp[g]])
        if len(g) > 1:  # ARPA needs every n-gram's context (for its backoff) and its suffix
            assert g[:-1] in logp and g[1:] in logp, g
    assert all(len(g) < 3 for g in backoff)  # highest order has no backoff
    text = arpa.read_text()
    assert text.startswith("\\data\\\nngram 1=") and text.rstrip().endswith("\\end\\")


def test_arpa_probabilities_are_normalised(arpa):
    sc = ArpaScorer(arpa)
    vocab = [g[0] for g in sc.logp if len(g) == 1 and g[0] != BOS]
    contexts = [(), (BOS,), ("the",), ("the", "old"), (BOS, "the"), ("visited", "the"), ("unseen", "context"),
                ("the", "zebra")]
    for ctx in contexts:
        total = sum(10 ** sc.log10_prob(ctx, w) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-5), ctx


def test_perplexity_orders_repetitive_clean_salad(arpa):
    sc = load_scorer(arpa, prefer_kenlm=False)
    rng = random.Random(123)  # unseen documents from the same grammar
    clean = [_document(rng) for _ in range(10)]
    salad = []
    for d in clean:
        words = d.replace("\n", " ").split()
        rng.shuffle(words)
        salad.append(" ".join(words))
    repetitive = ["\n".join([_BOILERPLATE] * 20), "\n".join(["The old farmer."] * 20)]
    p_clean, p_salad, p_rep = sc.perplexities(clean), sc.perplexities(salad), sc.perplexities(repetitive)
    assert max(p_rep) < min(p_clean) and max(p_clean) < min(p_salad), (p_rep, p_clean, p_salad)
    assert all(math.isfinite(p) and p >= 1.0 for p in p_clean + p_salad + p_rep)
    assert math.isfinite(sc.perplexity("")) and sc.perplexity("zebra quantum") > max(p_clean)


def test_kenlm_reads_our_arpa_with_same_scores(arpa):
    kenlm = pytest.importorskip("kenlm")
    ours = ArpaScorer(arpa)
    theirs = load_scorer(arpa)  # KenLMScorer when kenlm is importable
    assert isinstance(kenlm.Model(str(arpa)).order, int)
    rng = random.Random(5)
    for text in [_document(rng), "zebra quantum the farmer", ""]:
        assert theirs.perplexity(text) == pytest.approx(ours.perplexity(text), rel=1e-4)


def test_read_arpa_rejects_broken_files(tmp_path, arpa):
    lines = arpa.read_text().splitlines()
    cut = tmp_path / "cut.arpa"
    cut.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(CurateError, match="truncated|section has"):
        read_arpa(cut)
    wrong = tmp_path / "wrong.arpa"
    wrong.write_text("\n".join(line.replace("ngram 2=", "ngram 2=1") if line.startswith("ngram 2=") else line
                               for line in lines) + "\n")
    with pytest.raises(CurateError, match="header says ngram 2="):
        read_arpa(wrong)
    junk = tmp_path / "junk.arpa"
    junk.write_text("hello\n")
    with pytest.raises(CurateError, match="ARPA"):
        read_arpa(junk)


def test_gzip_arpa_and_unigram_model(tmp_path, corpus):
    gz = train_ngram(corpus[:50], tmp_path / "m.arpa.gz", order=1)
    with gzip.open(gz, "rt") as f:
        assert f.readline() == "\\data\\\n"
    sc = ArpaScorer(gz)
    vocab = [g[0] for g in sc.logp if g[0] != BOS]
    assert sum(10 ** sc.log10_prob((), w) for w in vocab) == pytest.approx(1.0, abs=1e-6)


def test_percentiles_and_verdicts():
    values = list(range(1, 101)) + [float("nan"), float("inf")]
    low, high = percentile_bounds(values, 10, 90)
    assert (low, high) == pytest.approx(tuple(np.percentile(np.arange(1, 101), [10, 90])))
    assert perplexity_verdict(5.0, low, high) == (False, "perplexity_too_low")
    assert perplexity_verdict(95.0, low, high) == (False, "perplexity_too_high")
    assert perplexity_verdict(50.0, low, high) == (True, "")
    assert perplexity_verdict(1e12, None, None) == (True, "")
    assert perplexity_verdict(float("inf"), None, None) == (False, "perplexity_too_high")
    with pytest.raises(ValueError):
        percentile_bounds([float("nan")], 1, 99)


def test_load_scorer_errors(tmp_path):
    with pytest.raises(CurateError, match="does not exist"):
        load_scorer(tmp_path / "missing.arpa")
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    try:
        import kenlm  # noqa: F401
    except ImportError:
        with pytest.raises(CurateError, match="kenlm"):
            load_scorer(tmp_path / "model.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CurateError, match="expected one reference model"):
        load_scorer(empty)


# -- causal LM scorer --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-lm")
    words = sorted(set(_ADJ + _NOUN + _VERB + _PREP) | {".", "the", "a"})
    vocab = {"<unk>": 0, "<pad>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=3, pad_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_causal_lm_scorer_matches_model_loss_and_batches(tiny_lm):
    import torch

    sc = load_scorer(tiny_lm, batch_size=3)
    assert isinstance(sc, CausalLMScorer)
    texts = ["the old farmer visited the busy market .", "a quiet student", "", "the doctor painted a map near "
             "the river . " * 3]
    batched = sc.perplexities(texts)
    single = [sc.perplexity(t) for t in texts]
    assert batched == pytest.approx(single, rel=1e-4)  # padding does not change scores
    ids = torch.tensor([sc._ids(texts[0])])
    with torch.no_grad():
        loss = sc.model(input_ids=ids, labels=ids).loss  # mean NLL of tokens 1..T-1
    assert batched[0] == pytest.approx(math.exp(loss.item()), rel=1e-4)
    assert all(math.isfinite(p) and p > 1.0 for p in batched)


# -- quality classifier ------------------------------------------------------------------------

_SPAM = ["buy", "cheap", "best", "price", "click", "here", "free", "shipping", "login", "cart", "deal", "casino",
         "win", "now", "home", "contact", "privacy", "terms", "©", "|", "»", "sale", "discount", "offer"]


def _spam(rng: random.Random) -> str:
    return " ".join(rng.choice(_SPAM) for _ in range(rng.randint(10, 40)))


@pytest.fixture(scope="module")
def quality_files(tmp_path_factory) -> tuple[Path, Path]:
    rng = random.Random(1)
    folder = tmp_path_factory.mktemp("quality-data")
    pos = folder / "reference.txt"
    pos.write_text("\n".join(" ".join(_sentence(rng) for _ in range(4)) for _ in range(250)) + "\n")
    neg = folder / "web.jsonl.gz"
    with gzip.open(neg, "wt") as f:
        for _ in range(250):
            f.write(json.dumps({"text": _spam(rng)}) + "\n")
    return pos, neg


def test_quality_classifier_separates_reference_from_spam(tmp_path, quality_files):
    pos, neg = quality_files
    model_path = train_quality([pos], [neg], tmp_path, epochs=5, dim=16, bucket=20_000, seed=0)
    assert model_path == tmp_path / "model.bin" and model_path.is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["heldout_documents"] == {"hq": 25, "lq": 25}
    assert metrics["heldout_accuracy"] >= 0.95
    qm = load_quality(tmp_path)
    rng = random.Random(99)
    hq = qm.scores([" ".join(_sentence(rng) for _ in range(3)) for _ in range(20)])
    lq = qm.scores([_spam(rng) for _ in range(20)])
    assert min(hq) > 0.5 > max(lq)
    assert all(0.0 <= s <= 1.0 for s in hq + lq)
    assert qm.score("Multi\nline\n\ntext works too.") == pytest.approx(qm.score("multi line text works too."))
    assert quality_verdict(0.7, 0.5) == (True, "") and quality_verdict(0.2, 0.5) == (False, "quality_low")


def test_read_texts_formats_and_errors(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc line\n\nsecond doc\nstill second\n")
    assert list(read_texts(txt)) == ["first doc line", "second doc", "still second"]
    assert list(read_texts(txt, "paragraph")) == ["first doc line", "second doc\nstill second"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(CurateError, match=r"b.jsonl:2: no string 'text'"):
        list(read_texts(bad))
    (tmp_path / "c.csv").write_text("x")
    with pytest.raises(CurateError, match="unknown text file type"):
        list(read_texts(tmp_path / "c.csv"))



def test_web_dump_negatives_stay_one_document_each_in_paragraph_mode(tmp_path):
    # Extracted pages have several paragraphs; whatever txt_docs says about the user's .txt files, each
    # page must stay one negative document (they once all merged into one in paragraph mode).
    rng = random.Random(5)
    pos = tmp_path / "books.txt"  # hard-wrapped: one document per blank-line-separated block
    pos.write_text("\n\n".join("\n".join(_sentence(rng) for _ in range(3)) for _ in range(30)) + "\n")
    dump = tmp_path / "web.warc.gz"
    write_warc(dump, [html_response(f"http://example.com/{i}", english_page(rng, f"Page {i}")) for i in range(12)])
    m = run_quality_model(QualityModelConfig(txt_docs="paragraph", epochs=2, dim=8, bucket=5000),
                          {"positive": [pos], "negative": [dump]}, tmp_path / "q")
    docs = {k: m.metrics["train_documents"][k] + m.metrics["heldout_documents"][k] for k in ("hq", "lq")}
    assert docs == {"hq": 30, "lq": 12}


_ACCENTED = ["Le café de la gare était fermé – “déjà”, dit le garçon.",
             "Die Brücke über den Fluss wurde für die Bürger geöffnet.",
             "Un élève a reçu une lettre très étrange, écrite à la main…"]


def test_non_utf8_text_is_decoded_like_web_pages(tmp_path, quality_files):
    rng = random.Random(6)
    lines = [f"{_sentence(rng)} {rng.choice(_ACCENTED)} {_sentence(rng)}" for _ in range(60)]
    ref = tmp_path / "reference.txt.gz"
    with gzip.open(ref, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("cp1252"))
    assert list(read_texts(ref)) == lines
    out = tmp_path / "q"
    assert main(["quality-model", "--positive", str(ref), "--negative", str(quality_files[1]), "--out", str(out),
                 "--set", "quality-model.dim=8", "--set", "quality-model.bucket=5000",
                 "--set", "quality-model.epochs=3"]) == 0
    m = read_manifest(out)
    assert m.metrics["train_documents"]["hq"] + m.metrics["heldout_documents"]["hq"] == len(lines)
    # no charset fits these bytes: an error naming the file and the line, not a traceback
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine first line\n" + bytes(range(128, 256)) * 20 + b"\n")
    with pytest.raises(CurateError, match=r"bad\.txt:2: .*convert"):
        list(read_texts(bad))


def test_quality_defaults_agree_between_command_config_and_function(capsys):
    cfg = QualityModelConfig()
    params = inspect.signature(train_quality).parameters
    for f in dataclasses.fields(QualityModelConfig):
        if f.name != "max_negative_documents":  # the stage's own setting, not a training argument
            name = {"word_ngrams": "wordNgrams"}.get(f.name, f.name)
            assert params[name].default == getattr(cfg, f.name), f.name
    assert cfg.lr == 0.5  # measured: held-out accuracy on the demo data, 10 epochs: 0.99 at 0.5, 0.71 at 0.1


# -- the commands ------------------------------------------------------------------------------

def test_reference_lm_command_writes_a_verified_folder(tmp_path, corpus):
    text = tmp_path / "ref.jsonl"
    text.write_text("".join(json.dumps({"text": d}) + "\n" for d in corpus[:100]))
    out = tmp_path / "ref-lm"
    argv = ["reference-lm", "--text", str(text), "--out", str(out), "--set", "reference-lm.order=2"]
    assert main(argv) == 0
    m = read_manifest(out)
    assert m.stage == "reference-lm" and m.config["order"] == 2 and verify(out) == []
    assert [(i.role, i.bytes) for i in m.inputs] == [("text", text.stat().st_size)]
    assert [o.path for o in m.outputs] == ["model.arpa"]
    assert m.metrics["sentences"] == sum(len(d.splitlines()) for d in corpus[:100])
    sc = load_scorer(out, prefer_kenlm=False)
    assert isinstance(sc, ArpaScorer) and sc.order == 2
    before = (out / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert read_manifest(out).id == m.id and (out / "manifest.json").stat().st_mtime_ns == before  # same id: skipped
    text.write_text(json.dumps({"text": "changed text"}) + "\n")
    assert main(argv) == 0
    assert read_manifest(out).id != m.id  # new input content -> new model


def test_quality_model_command_writes_a_verified_folder(tmp_path, quality_files):
    pos, neg = quality_files
    out = tmp_path / "q"
    argv = ["quality-model", "--positive", str(pos), "--negative", str(neg), "--out", str(out),
            "--set", "quality-model.dim=8", "--set", "quality-model.bucket=5000", "--set", "quality-model.epochs=3"]
    assert main(argv) == 0
    m = read_manifest(out)
    assert m.stage == "quality-model" and verify(out) == []
    assert sorted(i.role for i in m.inputs) == ["negative", "positive"]
    assert {o.path: o.kind for o in m.outputs} == {"model.bin": "model", "metrics.json": "metrics",
                                                   "combiner.json": "combiner"}
    assert m.metrics["signals_auc"]["combined"] is not None  # the quality score's combiner, fitted on the holdout
    assert m.config["dim"] == 8 and m.metrics["heldout_accuracy"] >= 0.9
    assert load_quality(out).score(_spam(random.Random(3))) < 0.5
    with pytest.raises(SystemExit):
        main(["quality-model", "--positive", str(pos), "--out", str(out)])  # --negative missing: argparse says so


def test_reference_lm_rejects_empty_text(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["reference-lm", "--text", str(empty), "--out", str(tmp_path / "o")]) != 0
    assert "no tokens" in capsys.readouterr().err  # one line, no traceback
