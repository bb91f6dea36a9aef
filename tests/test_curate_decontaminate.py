"""Decontamination against evaluation sets: a shared 13-gram drops a document, a 12-gram does not; flag mode
keeps and marks it; the sets are inputs (their sha256 changes the stage id); evaluation file formats."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from curate_fixtures import english_paragraph
from gristmill.curate.config import CurateConfig, DecontaminationConfig
from gristmill.curate.decontaminate import Decontaminator, build_index, eval_texts, set_names
from gristmill.curate.ledger import iter_ledger
from gristmill.curate.run import run_curate
from gristmill.manifests import ManifestError, sha256_file


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """Letters-only words no fixture sentence uses, so no n-gram is shared by chance."""
    return ["".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3)) for _ in range(n)]


QUESTION = _pseudo_words(random.Random(11), 30)  # one evaluation question, 30 normalised words


def _doc(rng: random.Random, inserted: list[str]) -> str:
    """English prose with `inserted` words as a sentence of their own in the middle."""
    middle = (" ".join(inserted).capitalize() + ".") if inserted else ""
    return "\n".join([english_paragraph(rng), english_paragraph(rng) + " " + middle, english_paragraph(rng)])


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    docs = {"has13": _doc(rng, QUESTION[5:18]), "has12": _doc(rng, QUESTION[5:17]), "clean": _doc(rng, [])}
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    evals = tmp_path / "bench" / "val.jsonl"
    evals.parent.mkdir()
    evals.write_text(json.dumps({"question": " ".join(QUESTION).capitalize() + "?", "answer": "Ostrik", "id": 7}) + "\n"
                     + json.dumps({"prompt": "What is 3 + 4?", "answer": "7"}) + "\n")
    return data, evals


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in iter_ledger(out / "ledger.jsonl.gz")}


def test_a_shared_13_gram_drops_a_12_gram_does_not(tmp_path):
    data, evals = _setup(tmp_path)
    cfg = CurateConfig(ledger_format="jsonl.gz")
    m = run_curate(cfg, {"data": [data], "decontaminate": [evals]}, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert (rows["has13"]["kept"], rows["has13"]["stage"], rows["has13"]["reason"]) == \
        (False, "decontaminate", "decontaminated")
    assert rows["has13"]["detail"] == "val.jsonl: " + " ".join(QUESTION[5:18])  # the set and the shared n-gram
    assert rows["has12"]["kept"] and rows["clean"]["kept"]
    assert m.metrics["dropped"] == {"decontaminated": 1}
    assert m.metrics["records_read"] == m.metrics["kept"] + 1
    s = m.metrics["decontamination"]
    assert (s["ngram"], s["action"]) == (13, "drop")
    # 30 - 13 + 1 n-grams of the question; "What is 3 + 4?" and the rest are shorter than 13 words
    assert s["sets"][0]["ngrams"] == 18 and s["sets"][0]["texts_shorter_than_ngram"] == s["sets"][0]["texts"] - 1
    assert "decontaminate" in [f["step"] for f in m.metrics["funnel"]]
    assert "| decontaminated | 1 |" in (tmp_path / "out" / "report.md").read_text()
    # the set is an input of the stage, by content
    [rec] = [i for i in m.inputs if i.role == "decontaminate"]
    assert rec.sha256 == sha256_file(evals)

    # without the evaluation set the same documents are all kept: the drop above is decontamination's
    plain = run_curate(cfg, {"data": [data]}, tmp_path / "plain")
    assert plain.metrics["kept"] == 3 and "decontamination" not in plain.metrics


def test_flag_mode_keeps_and_marks(tmp_path):
    data, evals = _setup(tmp_path)
    cfg = CurateConfig(ledger_format="jsonl.gz", decontamination=DecontaminationConfig(action="flag"))
    m = run_curate(cfg, {"data": [data], "decontaminate": [evals]}, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    flagged = rows["has13"]
    assert (flagged["kept"], flagged["stage"], flagged["reason"]) == (True, "decontaminate", "decontaminated")
    assert flagged["detail"] == "val.jsonl: " + " ".join(QUESTION[5:18])
    assert rows["has12"]["reason"] is None and rows["clean"]["reason"] is None
    assert m.metrics["kept"] == 3 and m.metrics["flagged"] == {"decontaminated": 1} and not m.metrics["dropped"]
    docs = {d["id"]: d for d in map(json.loads, gzip.open(tmp_path / "out" / "documents-00000.jsonl.gz", "rt"))}
    assert docs["has13"]["metadata"]["contamination"] == flagged["detail"]
    assert "contamination" not in docs["clean"]["metadata"]


def test_a_changed_eval_set_changes_the_stage_id(tmp_path):
    data, evals = _setup(tmp_path)
    cfg = CurateConfig(ledger_format="jsonl.gz")
    first = run_curate(cfg, {"data": [data], "decontaminate": [evals]}, tmp_path / "out")
    assert run_curate(cfg, {"data": [data], "decontaminate": [evals]}, tmp_path / "out").id == first.id  # skip
    evals.write_text(evals.read_text() + json.dumps({"prompt": "one more question"}) + "\n")
    second = run_curate(cfg, {"data": [data], "decontaminate": [evals]}, tmp_path / "out")
    assert second.id != first.id
    without = run_curate(cfg, {"data": [data]}, tmp_path / "none")
    assert without.id not in (first.id, second.id)


def test_a_missing_eval_set_is_a_clear_error(tmp_path):
    data, _ = _setup(tmp_path)
    with pytest.raises(ManifestError, match=r"input 'decontaminate': .*missing\.jsonl does not exist"):
        run_curate(CurateConfig(), {"data": [data], "decontaminate": [tmp_path / "missing.jsonl"]}, tmp_path / "out")


def test_eval_file_formats(tmp_path):
    msgs = {"messages": [{"role": "user", "content": "alpha beta"}, {"role": "assistant", "content": "gamma"}],
            "meta": {"source": "x"}}
    (tmp_path / "chat.jsonl").write_text(json.dumps(msgs) + "\n\n")
    assert list(eval_texts(tmp_path / "chat.jsonl")) == ["user", "alpha beta", "assistant", "gamma", "x"]
    assert list(eval_texts(tmp_path / "chat.jsonl", ["content"])) == ["alpha beta", "gamma"]  # at any depth
    with gzip.open(tmp_path / "set.json.gz", "wt") as f:
        json.dump([{"question": "q one"}, {"question": "q two", "id": 3}], f)
    assert list(eval_texts(tmp_path / "set.json.gz")) == ["q one", "q two"]
    (tmp_path / "bench.txt").write_text("first line of one\nquestion wrapped\n\n\nsecond question\n")
    assert list(eval_texts(tmp_path / "bench.txt")) == ["first line of one question wrapped", "second question"]
    (tmp_path / "bad.jsonl").write_text('{"a": "b"}\n{oops\n')
    from gristmill.curate import CurateError

    with pytest.raises(CurateError, match=r"bad\.jsonl:2: not JSON"):
        list(eval_texts(tmp_path / "bad.jsonl"))
    assert set_names([Path("/d/sft/val.jsonl"), Path("/d/prompts/val.jsonl"), Path("/d/x.txt")]) == \
        ["sft/val.jsonl", "prompts/val.jsonl", "d/x.txt"]


def test_matching_ignores_case_and_punctuation_and_needs_n_words(tmp_path):
    words = _pseudo_words(random.Random(2), 20)
    (tmp_path / "a.txt").write_text(" ".join(words) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": " ".join(words[:8])}) + "\n")  # too short: no n-gram
    summary = build_index([tmp_path / "a.txt", tmp_path / "b.jsonl"], DecontaminationConfig(ngram=13), tmp_path / "idx")
    assert [s["ngrams"] for s in summary] == [8, 0]
    finder = Decontaminator(tmp_path / "idx")
    shouted = ", ".join(w.upper() for w in words[3:16]) + "!"
    assert finder.find([shouted, " ".join(words[3:15]), "", " ".join(words[:8])]) == \
        [("a.txt", " ".join(words[3:16])), None, None, None]
