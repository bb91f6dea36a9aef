"""The eval stage: shared-context log-likelihoods equal the model's own forward, acc / acc_norm / CORE by hand, few-shot draws, GSM8K answers, task files, the manifest."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from align_helpers import tiny_base, write_jsonl

from gristmill.eval import EvalError
from gristmill.eval.config import EvalConfig
from gristmill.eval.loglik import Candidate, Score, candidates, encode_pair, score_groups
from gristmill.eval.metrics import centered, choose, core_score, task_result
from gristmill.eval.prompts import Item, fewshot, gsm8k_extract, gsm8k_target, order, read_items, scorable
from gristmill.eval.tasks import TASKS, Task, core_baselines, resolve, split_task_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
WORDS = ["garden", "river", "stone", "cloud", "apple", "window", "market", "silver"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("eval") / "base")


@pytest.fixture(scope="module")
def model_tok(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(base)


def own_forward(model, ids: list[int], start: int) -> tuple[float, bool]:
    """The reference: one sequence alone through the model, the span's summed log-prob and greedy match."""
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    span = range(start, len(ids))
    return sum(lp[j - 1, ids[j]].item() for j in span), all(lp[j - 1].argmax().item() == ids[j] for j in span)


def test_shared_context_logliks_equal_each_candidates_own_forward(model_tok):
    model, tok = model_tok
    mc = Task("t", "t.jsonl", "multiple_choice", "core_mc", "acc", shots=2, delimiter=" ")
    schema = Task("s", "s.jsonl", "schema", "core_schema", "acc", core=True)
    groups = []
    for i, w in enumerate(WORDS):
        shots = [{"query": f"Tell me about {x}.", "choices": ["good", "bad"], "gold": 0} for x in WORDS[i + 1:i + 3]]
        s = scorable(mc, {"query": f"Reverse {w}.", "choices": [w[::-1], "good bad", w, "stone river cloud"],
                          "gold": 0}, shots)
        groups.append(candidates(tok, s, bos=None, shared=False))
        s2 = scorable(schema, {"contexts": [f"Reverse {w}.", f"Tell me about {w} now."], "continuation": "good bad",
                               "gold": 1}, [])
        groups.append(candidates(tok, s2, bos=tok.eos_token_id, shared=True))
    got = score_groups(model, groups, pad_id=tok.pad_token_id, batch_size=2, device=torch.device("cpu"))
    assert len(got) == len(groups)
    for group, scores in zip(groups, got):
        for c, sc in zip(group, scores):
            want, greedy = own_forward(model, c.ids, c.start)
            assert sc.logprob == pytest.approx(want, abs=1e-4)
            assert sc.tokens == len(c.ids) - c.start and sc.greedy == greedy


def test_encode_pair_moves_the_contexts_trailing_space_to_the_continuation(model_tok):
    _, tok = model_tok
    ids, start = encode_pair(tok, "Reverse garden. ", "nedrag")
    ids2, start2 = encode_pair(tok, "Reverse garden.", " nedrag")
    assert (ids, start) == (ids2, start2)
    assert tok.decode(ids[start:]) == " nedrag"


def test_core_spans_start_after_the_common_prefix_and_end_at_the_common_suffix(model_tok):
    _, tok = model_tok
    mc = Task("c", "c.jsonl", "multiple_choice", "core_mc", "acc_mean", core=True)
    cands = candidates(tok, scorable(mc, {"query": "Tell me about", "choices": ["good garden", "good river"],
                                          "gold": 0}, []), bos=1, shared=True)
    a, b = cands
    assert a.ids[:a.start] == b.ids[:b.start] and a.ids[a.start] != b.ids[b.start]  # " good" is shared, not scored
    sch = Task("s", "s.jsonl", "schema", "core_schema", "acc_mean", core=True)
    cands = candidates(tok, scorable(sch, {"contexts": ["Reverse garden", "Tell me about river"],
                                           "continuation": "good bad", "gold": 0}, []), bos=1, shared=True)
    assert [c.ids[c.start:] for c in cands][0] == [c.ids[c.start:] for c in cands][1]
    assert tok.decode(cands[0].ids[cands[0].start:]).strip().endswith("good bad")


def test_acc_acc_norm_and_mean_loss_pick_by_their_own_rules():
    # choice 0: most total log-prob; choice 1: best per character (long); choice 2: best per token
    scores = [Score(-4.0, 4, False), Score(-6.0, 6, False), Score(-4.5, 9, False)]
    picks = choose(scores, [2, 30, 10])
    assert picks == {"acc": 0, "acc_norm": 1, "acc_mean": 2}
    task = Task("t", "t", "multiple_choice", "core_mc", "acc_norm")
    per = [{"acc": 1.0, "acc_norm": 0.0}, {"acc": 1.0, "acc_norm": 1.0}, {"acc": 0.0, "acc_norm": 1.0},
           {"acc": 1.0, "acc_norm": 1.0}]
    r = task_result(task, per, baseline=0.25)
    assert r["value"] == 0.75 and r["metrics"]["acc"] == 0.75
    assert r["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))  # sample variance: p(1-p) n/(n-1), over n
    assert r["centered"] == pytest.approx((0.75 - 0.25) / 0.75)


def test_core_centring_and_average_by_hand():
    results = {"core.a": {"centered": centered(0.40, 0.25), "stderr": 0.01, "random_baseline": 0.25},
               "core.b": {"centered": centered(0.30, 0.0), "stderr": 0.02, "random_baseline": 0.0},
               "core.c": {"centered": centered(0.62, 0.62), "stderr": 0.03, "random_baseline": 0.62},
               "piqa": {"centered": 0.9, "stderr": 0.01, "random_baseline": 0.5}}  # not a CORE task
    c = core_score(results)
    assert c["value"] == pytest.approx(((0.40 - 0.25) / 0.75 + 0.30 + 0.0) / 3)
    assert c["tasks"] == 3 and c["of"] == 22 and "piqa" not in c["members"]


def test_macro_average_over_subjects():
    task = Task("m", "m", "multiple_choice", "mmlu_cloze", "acc")
    per = [{"acc": 1.0}, {"acc": 1.0}, {"acc": 1.0}, {"acc": 0.0}]  # subject x: 3 of 3, y: 0 of 1
    r = task_result(task, per, baseline=0.25, groups={"x": [0, 1, 2], "y": [3]})
    assert r["value"] == pytest.approx(0.5) and r["micro"] == pytest.approx(0.75)


def test_fewshot_is_deterministic_and_never_the_example_itself():
    pool = [Item(i, {"query": str(i)}) for i in range(30)]
    for i in range(30):
        a, b = fewshot(pool, i, 5, 1234), fewshot(pool, i, 5, 1234)
        assert [x.index for x in a] == [x.index for x in b] and i not in [x.index for x in a]
        assert len({x.index for x in a}) == 5
    assert [x.index for x in fewshot(pool, 0, 5, 1234)] != [x.index for x in fewshot(pool, 0, 5, 99)]
    with pytest.raises(EvalError, match="shots"):
        fewshot(pool[:3], 0, 5, 1)


def test_limits_core_shuffle_and_mmlu_strata():
    items = [Item(i, {"subject": "abc"[i % 3] if i < 9 else "a"}) for i in range(20)]
    plain = Task("p", "p", "multiple_choice", "core_mc", "acc")
    assert [x.index for x in order(plain, items, 4)] == [0, 1, 2, 3]
    core = Task("c", "c", "multiple_choice", "core_mc", "acc", core=True)
    assert [x.index for x in order(core, items, 4)] != [0, 1, 2, 3]
    assert [x.index for x in order(core, items, 0)] == [x.index for x in order(core, items, 0)]
    strat = Task("s", "s", "multiple_choice", "mmlu_cloze", "acc", stratify="subject")
    picked = order(strat, sorted(items, key=lambda x: x.data["subject"]), 3)
    assert sorted(x.data["subject"] for x in picked) == ["a", "b", "c"]


def test_gsm8k_answers():
    assert gsm8k_target("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_target("#### 1,234") == "1234"
    assert gsm8k_extract("So 3 + 4 = 7 eggs.\n#### 7") == ("7", "7")
    assert gsm8k_extract("The total is $1,200.00 and then 5 more, so 1205.") == (None, "1205")
    assert gsm8k_extract("I don't know") == (None, None)
    assert gsm8k_extract("-3.0 degrees") == (None, "-3")


def test_task_names_files_and_errors(tmp_path):
    f = write_jsonl(tmp_path / "qa.jsonl", [{"query": "q", "choices": ["a", "b"], "gold": 1}])
    names, files = split_task_files([f"{f}:multiple_choice", "core"])
    assert names == ["qa.jsonl:multiple_choice", "core"] and files == [f]
    got, missing = resolve(["qa.jsonl:multiple_choice"], [f])
    assert got[0].path == f and got[0].task.format == "multiple_choice" and missing == []
    with pytest.raises(EvalError, match="unknown task 'hellaswagg'") as e:
        resolve(["hellaswagg"], [tmp_path])
    assert "arc_easy" in str(e.value) and "core" in str(e.value)  # the known ones are listed
    with pytest.raises(EvalError, match="hellaswag_val_klosax.jsonl"):
        resolve(["hellaswag"], [tmp_path])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": "q", "choices": ["a"\n')
    with pytest.raises(EvalError, match=r"bad\.jsonl:2 .*not JSON"):
        read_items(Task("b", "bad.jsonl", "multiple_choice", "core_mc", "acc"), bad)
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 2}\n')
    with pytest.raises(EvalError, match=r"bad\.jsonl:1 .*gold"):
        read_items(Task("b", "bad.jsonl", "multiple_choice", "core_mc", "acc"), bad)


def test_generative_rows_carry_their_check_rule(tmp_path):
    from gristmill.align.answers import AnswerCheck
    from gristmill.eval.generative import _checked

    gen = Task("g", "g.jsonl", "generative", "generative", "exact_match")
    f = write_jsonl(tmp_path / "g.jsonl", [
        {"prompt": "What is 7 + 5?", "answer": 12, "task": "arithmetic", "check": "last_number", "max_chars": 30},
        {"prompt": "Capital of Velmora?", "answer": "Ostrik", "wrong_answers": ["Sennat"]},
        {"prompt": "Say hi.", "answer": "hi"}])
    items = [it.data for it in read_items(gen, f)]
    assert [x["check"] for x in items] == [AnswerCheck("last_number", (), 30), AnswerCheck("word", ("Sennat",)), None]
    verdicts = [_checked(x, a)[0]["exact_match"] for x, a in zip(items * 2, [
        "7 + 5 = 12.", "Ostrik.", "Oh, hi there",  # right by each row's rule
        "12 or 13", "Ostrik or Sennat", "hit"])]  # the last number, a wrong answer named, not a whole word
    assert verdicts == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert _checked(items[0], "So: " + "1" * 30 + " and 12")[0]["exact_match"] == 0.0  # over max_chars
    f.write_text(json.dumps({"prompt": "q", "answer": "x"}) + "\n" + json.dumps({"prompt": "q", "answer": "five",
                                                                                 "check": "last_number"}) + "\n")
    with pytest.raises(EvalError, match=r"g\.jsonl:2 \(task g\): check 'last_number' needs an integer 'answer'"):
        read_items(gen, f)


def test_core_table_matches_dclms_baselines():
    meta = SHARED / "core_icl" / "eval_meta_data.csv"
    if not meta.is_file():
        pytest.skip("../shared/data/benchmarks is not here")
    base = core_baselines(meta)
    for name, t in TASKS.items():
        if t.core:
            assert t.baseline == pytest.approx(base[name.removeprefix("core.")]), name


def test_eval_stage_end_to_end_on_task_files_of_its_own(tmp_path, base):
    from gristmill.eval.run import run_eval
    from gristmill.manifests import read_manifest, verify

    mc = write_jsonl(tmp_path / "mc.jsonl", [{"query": f"Reverse {w}.", "choices": [w[::-1], "good", w], "gold": 0}
                                             for w in WORDS])
    lm = write_jsonl(tmp_path / "lm.jsonl", [{"context": f"Reverse {w}.", "continuation": w[::-1]} for w in WORDS])
    gen = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": f"Reverse {w}.", "answer": w[::-1]} for w in WORDS[:3]])
    cfg = EvalConfig(tasks=["mc.jsonl:multiple_choice", "lm.jsonl:language_modeling", "gen.jsonl:generative"],
                     shots={"mc.jsonl:multiple_choice": 2}, limits={"lm.jsonl:language_modeling": 5},
                     max_new_tokens=6, chat=True, batch_size=2)
    out = tmp_path / "eval"
    m = run_eval(cfg, {"model": [base], "data": [mc, lm, gen]}, out)
    assert verify(out / "manifest.json") == []
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"]["mc.jsonl:multiple_choice"]["n"] == len(WORDS)
    assert res["tasks"]["lm.jsonl:language_modeling"]["n"] == 5
    assert res["tasks"]["mc.jsonl:multiple_choice"]["random_baseline"] == pytest.approx(1 / 3)
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    mc_rows = [r for r in rows if r["task"] == "mc.jsonl:multiple_choice"]
    acc = sum(r["correct"] for r in mc_rows) / len(mc_rows)
    assert res["tasks"]["mc.jsonl:multiple_choice"]["value"] == pytest.approx(acc)
    assert all(r["index"] not in r["shots"] and len(r["shots"]) == 2 for r in mc_rows)
    assert {r.role for r in read_manifest(out / "manifest.json").inputs} == {"model", "data"}
    assert "model-index" in (out / "card.md").read_text()
    again = run_eval(cfg, {"model": [base], "data": [mc, lm, gen]}, out)  # finished: skipped, same id
    assert again.id == m.id


def test_eval_manifest_lineage_reaches_the_models_stages(tmp_path):
    from align_helpers import sft_chain

    from gristmill.eval.run import run_eval
    from gristmill.manifests import lineage

    sft = sft_chain(tmp_path)
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"query": f"Reverse {w}.", "choices": [w[::-1], "good"], "gold": 0}
                                             for w in WORDS])
    out = tmp_path / "eval"
    run_eval(EvalConfig(tasks=["mc.jsonl:multiple_choice"]), {"model": [sft], "data": [mc]}, out)
    def stages(node) -> list[str]:
        own = [node.manifest.stage] if node.manifest is not None else []
        return own + [s for p in node.parents for s in stages(p)]

    assert stages(lineage(out))[:1] == ["eval"]
    assert {"sft", "pretrain", "tokenize"} <= set(stages(lineage(out)))


def test_alpaca_eval_answers_identical_to_the_reference_are_exact_ties(tmp_path, base):
    """A model judged against its own answers: every pair is a tie by equality, the win rate exactly 0.5."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gristmill.align.generate import generate
    from gristmill.eval.run import run_eval

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base)
    prompts = [f"Tell me about {w}." for w in WORDS[:4]]
    own = generate(model, tok, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens=6, max_length=128,
                   device=torch.device("cpu"))
    bench = tmp_path / "bench"
    write_jsonl(bench / "original" / "alpaca_eval_davinci003_reference.jsonl",
                [{"instruction": p, "output": o, "generator": "self"} for p, o in zip(prompts, own)])
    out = tmp_path / "eval"
    run_eval(EvalConfig(tasks=["alpaca_eval"], chat=True, max_new_tokens=6), {"model": [base], "data": [bench],
                                                                              "reward": [base]}, out)
    res = json.loads((out / "results.json").read_text())["tasks"]["alpaca_eval"]
    assert res["value"] == 0.5 and res["ties"] == 4 and res["n"] == 4
    with pytest.raises(EvalError, match="--reward"):
        run_eval(EvalConfig(tasks=["alpaca_eval"], chat=True), {"model": [base], "data": [bench]}, tmp_path / "e2")


def test_gsm8k_plain_text_few_shot_generation_is_cut_at_the_next_question(tmp_path, base):
    from gristmill.eval.generative import _cut
    from gristmill.eval.run import run_eval

    assert _cut(" 12 apples.\n#### 12\n\nQuestion: How many", ("\n\nQuestion:", "Question:")) == "12 apples.\n#### 12"
    bench = tmp_path / "bench"
    write_jsonl(bench / "original" / "gsm8k_test.jsonl",
                [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}.\n#### {2 * i}"} for i in range(6)])
    out = tmp_path / "eval"
    run_eval(EvalConfig(tasks=["gsm8k"], shots={"gsm8k": 2}, max_new_tokens=8, limit=3), {"model": [base],
                                                                                         "data": [bench]}, out)
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["0", "2", "4"] and all("Question:" not in r["output"] for r in rows)
    assert all(r["correct"] == (r["extracted"] == r["answer"]) for r in rows)


def test_ifeval_instruction_level_counts_every_instruction_not_a_mean_of_prompts():
    from gristmill.eval.generative import _ifeval_levels

    rows = [{"inst_strict": [True], "inst_loose": [True]},
            {"inst_strict": [False, False, True], "inst_loose": [True, False, True]}]
    got = _ifeval_levels(rows, {"metrics": {"prompt_strict": 0.5}, "stderr": 0.1})
    assert got["metrics"]["inst_strict_level"] == 0.5  # 2 of 4 instructions; the mean of prompt means is 2/3
    assert got["metrics"]["inst_loose_level"] == 0.75 and got["instructions"] == 4
    assert got["value"] == pytest.approx((0.5 + 0.5) / 2)
