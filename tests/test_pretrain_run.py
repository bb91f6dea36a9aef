"""The pretrain stage end to end: the loss falls, the manifest verifies and links to the tokens, the model loads and generates."""
from __future__ import annotations

import json

import pytest

from gristmill.manifests import ManifestError, read_manifest, verify
from gristmill.pretrain.run import run_pretrain
from pretrain_helpers import make_tokens, rows, tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_run")
    tok = make_tokens(root / "tok")
    out = root / "pt"
    m = run_pretrain(tiny(max_steps=40, checkpoint={"every": 20}), {"data": [tok]}, out)
    return tok, out, m


def test_loss_falls_and_metrics_are_logged(trained):
    _, out, m = trained
    r = rows(out)
    assert sorted(r) == list(range(1, 41))
    first = sum(r[s]["loss"] for s in range(1, 4)) / 3
    assert first > 5.0  # about ln(vocab) at the start
    assert m.metrics["final_train_loss"] < 0.5 * first  # the templated corpus is learnable
    assert m.metrics["val_loss"] < 0.5 * first and m.metrics["val_perplexity"] == pytest.approx(
        2.718281828 ** m.metrics["val_loss"], rel=1e-6)
    assert [s for s in r if "eval_loss" in r[s]] == [10, 20, 30, 40]
    assert r[1]["lr"] == pytest.approx(3e-3 / 5) and r[5]["lr"] == pytest.approx(3e-3)
    assert all(r[s]["grad_norm"] > 0 for s in r)
    t = {row["step"]: row for row in map(json.loads, (out / "timings.jsonl").read_text().splitlines())}
    assert all(t[s]["tokens_per_s"] > 0 and "tokens_per_s" not in r[s] for s in r)  # wall clock kept apart
    assert m.metrics["tokens_seen"] == 40 * 8 * 64 and m.metrics["steps"] == 40
    assert m.events == [] and m.metrics["rollbacks"] == 0


def test_manifest_verifies_and_links_to_the_token_manifest(trained):
    tok, out, m = trained
    assert verify(out) == []
    (inp,) = m.inputs
    assert inp.role == "data" and inp.stage == "tokenize" and inp.id == read_manifest(tok).id
    kinds = {o.path: o.kind for o in m.outputs}
    assert kinds["model/model.safetensors"] == kinds["model/config.json"] == kinds["model/tokenizer.json"] == "model"
    assert kinds["metrics.jsonl"] == "metrics" and kinds["training.png"] == "plot" and kinds["report.md"] == "report"
    assert not any(p.startswith("checkpoints") for p in kinds)
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert "validation loss" in (out / "report.md").read_text()
    assert m.metrics["params"] > 100_000


def test_model_folder_loads_offline_and_generates(trained):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, out, _ = trained
    folder = out / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["vocab_size"] % 64 == 0 and cfg["vocab_size"] >= len(tokenizer)
    ids = tokenizer("alice gives", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(gen[0], skip_special_tokens=True)
    assert text.startswith("alice gives") and len(gen[0]) > ids["input_ids"].shape[1]
    # it learned the corpus: the continuation uses its words
    assert any(w in text[len("alice gives"):] for w in ("to", "then", "counts", "apples", "books", "coins"))


def test_second_run_is_skipped_and_a_changed_config_is_not(trained, tmp_path):
    tok, out, m = trained
    before = (out / "manifest.json").read_text()
    again = run_pretrain(tiny(max_steps=40, checkpoint={"every": 20}), {"data": [tok]}, out)
    assert again.id == m.id and (out / "manifest.json").read_text() == before
    with pytest.raises(ManifestError):
        run_pretrain(tiny(), {"data": [tmp_path / "nowhere"]}, tmp_path / "x")
