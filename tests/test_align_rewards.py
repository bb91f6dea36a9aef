"""Rewards for responses: the reward model's scores through the prompt-sharing layout equal its own forward on each rendered conversation; the checker scores 1 / 0."""
from __future__ import annotations

import pytest
import torch

from align_helpers import tiny_base
from gristmill.align import AlignError
from gristmill.align.answers import AnswerCheck, answer_correct, parse_check
from gristmill.align.chat import pad_id
from gristmill.align.judge import HeldOutPrompt
from gristmill.align.models import load_reward_model, load_tokenizer
from gristmill.align.rewards import checker_rewards, model_rewards, render_ids
from gristmill.align.scoring import SequenceScorer


def test_model_rewards_equal_the_classifier_on_each_conversation(tmp_path):
    folder = tiny_base(tmp_path / "rm")
    tok = load_tokenizer(folder)
    rm = load_reward_model(folder, pad=pad_id(tok), seed=1).eval()
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)  # a head far from 0, so a wrong position shows
    prompts = [[{"role": "user", "content": "Tell me about river."}], [{"role": "user", "content": "Reverse stone."}]]
    responses = [["good river", "bad", ""], ["enots"]]
    got = model_rewards(SequenceScorer(rm), tok, prompts, responses, max_length=64, device="cpu", batch_size=1)
    assert [len(g) for g in got] == [3, 1]
    for p, answers, scores in zip(prompts, responses, got):
        for a, s in zip(answers, scores):
            ids = render_ids(tok, p + [{"role": "assistant", "content": a}], 64)
            with torch.no_grad():
                want = rm(input_ids=torch.tensor([ids])).logits[0, 0].item()
            assert s == pytest.approx(want, abs=1e-5)


def test_checker_rewards_score_answers_and_refuse_prompts_without_one():
    prompts = [HeldOutPrompt([{"role": "user", "content": "Calculate 2 + 3."}], answer="5", task="arithmetic",
                             check=AnswerCheck("last_number")),
               HeldOutPrompt([{"role": "user", "content": "Name a colour."}], answer="violet")]
    assert checker_rewards(prompts, ["2 + 3 = 5.", "It is violet."]) == [1.0, 1.0]
    assert checker_rewards(prompts, ["2 + 3 = 6.", "It is blue."]) == [0.0, 0.0]
    assert checker_rewards(prompts, ["5 + 1 = 6.", "Violets are blue."]) == [0.0, 0.0]  # the last number; a whole word
    with pytest.raises(AlignError, match="no 'answer'"):
        checker_rewards(prompts + [HeldOutPrompt([{"role": "user", "content": "Hi."}])], ["a", "b", "c"])


def q(answer, check=None):
    return HeldOutPrompt([{"role": "user", "content": "?"}], answer=answer, check=check)


def test_answer_rules():
    word = q("Ostrik")  # no check: the whole response, or a whole word / phrase of it, case and spaces ignored
    assert [answer_correct(word, r) for r in ("Ostrik", " the capital is OSTRIK.", "Ostriks", "Ost rik")] == \
        [True, True, False, False]
    assert answer_correct(q("new  york"), "It is New\nYork.") and not answer_correct(q("york"), "newyork")
    exact = q("new york", AnswerCheck("exact"))
    assert answer_correct(exact, " New  York ") and not answer_correct(exact, "New York.")
    num = q("12", AnswerCheck("last_number"))
    assert [answer_correct(num, r) for r in ("7 + 5 = 12.", "012", "12 or 13", "twelve", "-12", "")] == \
        [True, True, False, False, False, False]
    last = q("nedrag", AnswerCheck("last_word"))
    assert [answer_correct(last, r) for r in ("'garden' reversed is 'NEDRAG'.", "nedrag or garden", "n e d r a g")] == \
        [True, False, False]
    fact = q("Ostrik", AnswerCheck("word", wrong_answers=("Belhaven", "Sennat"), max_chars=20))
    assert [answer_correct(fact, r) for r in ("Ostrik.", "Ostrik or Belhaven", "Not sennat: Ostrik",
                                              "It is Ostrik, " + "x" * 10)] == [True, False, False, False]
    assert answer_correct(q("Ostrik", AnswerCheck(max_chars=6)), "  Ostrik  ")  # counted after stripping


def test_checks_parse_from_record_fields():
    assert parse_check({"answer": "5"}, "5") is None
    assert parse_check({"check": "last_number", "max_chars": 200}, "5") == AnswerCheck("last_number", (), 200)
    assert parse_check({"wrong_answers": ["a", "b"]}, "c") == AnswerCheck("word", ("a", "b"))
    with pytest.raises(ValueError, match="'check' must be one of"):
        parse_check({"check": "regex"}, "5")
