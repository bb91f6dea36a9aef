"""The judge: an answer against itself is a tie (win rate exactly 0.5), changed answers counted, near-ties within the tolerance count half, the Wilson interval by hand."""
from __future__ import annotations

import math

import pytest
import torch

from align_helpers import WORDS, tiny_base
from gristmill.align.chat import pad_id
from gristmill.align.judge import (TIE_TOLERANCE, HeldOutPrompt, judge_with, pair_outcome, reward_verdict,
                                   wilson_interval, win_rate, win_rate_text)
from gristmill.align.models import load_reward_model, load_tokenizer
from gristmill.align.rewards import model_rewards
from gristmill.align.scoring import SequenceScorer

PROMPTS = [HeldOutPrompt([{"role": "user", "content": f"Tell me about {w}."}]) for w in WORDS] + \
          [HeldOutPrompt([{"role": "user", "content": f"Reverse {w}."}], answer=w[::-1], task="reverse") for w in WORDS]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """(tiny reward model folder, its tokenizer, a scorer whose head is far from 0, a model's answers to PROMPTS)."""
    from gristmill.align.generate import generate
    from gristmill.align.models import load_causal_lm

    folder = tiny_base(tmp_path_factory.mktemp("judge") / "rm")
    tok = load_tokenizer(folder)
    rm = load_reward_model(folder, pad=pad_id(tok), seed=1).eval()
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)  # scores of a few units, so layout noise is as large as it gets here
    lm = load_causal_lm(folder, pad=pad_id(tok))
    answers = generate(lm, tok, [p.messages for p in PROMPTS], max_new_tokens=8, max_length=64,
                       device=torch.device("cpu"), sample_seed=0)
    answers[0] = ""  # an empty answer is judged like any other
    assert len(set(answers)) > len(answers) // 2  # varied answers, not one string
    return folder, tok, SequenceScorer(rm), answers


def test_wilson_interval_by_hand():
    # textbook values (Wilson 1927; Newcombe 1998, table I): 0 / 10, 8 / 10 and 50 / 100 at 95 %
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    # a half-point tie: 7 wins, 1 tie, 2 losses of 10 -> 7.5 / 10, written out with z = 1.96
    p, n, z = 0.75, 10, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(7.5, 10, z=1.96) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (centre - half, centre + half) == pytest.approx((0.4422, 0.9191), abs=1e-4)  # by hand: 0.6806 -+ 0.2384
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)  # all wins: width kept, inside [0, 1]
    with pytest.raises(ValueError, match="at least one outcome"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="must lie in"):
        wilson_interval(11, 10)


def test_held_out_prompts_carry_each_records_check(tmp_path):
    """The prompts judged before / after keep the record's answer, task and check rule, so accuracy is checked by it."""
    import json

    from gristmill.align.answers import AnswerCheck
    from gristmill.align.data import DataConfig, load_preferences
    from gristmill.align.judge import checked_accuracy, held_out_prompts

    f = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "What is 7 + 5?", "chosen": "12", "rejected": "13", "answer": "12", "task": "sum",
             "check": "last_number"},
            {"prompt": "What is 7 + 5?", "chosen": "7 + 5 = 12.", "rejected": "7 + 5 = 11.", "answer": "12"},
            {"prompt": "Capital of Velmora?", "chosen": "Ostrik", "rejected": "Sennat", "answer": "Ostrik",
             "wrong_answers": ["Sennat"]},
            {"prompt": "Hi.", "chosen": "Hello.", "rejected": "Go away."}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = held_out_prompts(load_preferences([f], DataConfig()).records, limit=10)
    assert [(p.answer, p.task, p.check) for p in got] == [  # the second pair repeats the first prompt: dropped
        ("12", "sum", AnswerCheck("last_number")), ("Ostrik", None, AnswerCheck("word", ("Sennat",))), (None, None, None)]
    assert checked_accuracy(got, ["7 + 5 = 12, not 13", "Ostrik or Sennat", "hello"]) == (0.0, 2)
    assert checked_accuracy(got, ["13 - 1 = 12", "Ostrik", "hello"]) == (1.0, 2)


def test_outcomes_equal_texts_tie_and_near_ties_count_half():
    assert pair_outcome("same", "same", 1.0, 5.0) == 0.5  # equal texts tie whatever the scores say
    assert pair_outcome("a", "b", 1.0, 1.0 + TIE_TOLERANCE / 2) == 0.5
    assert pair_outcome("a", "b", 1.0, 1.0 - TIE_TOLERANCE / 2) == 0.5
    assert pair_outcome("a", "b", 1.0, 1.0 + 2 * TIE_TOLERANCE) == 1.0
    assert pair_outcome("a", "b", 1.0, 1.0 - 2 * TIE_TOLERANCE) == 0.0
    assert pair_outcome("a", "b", 1.0, 1.5, tolerance=1.0) == 0.5
    assert win_rate([]) == (None, None)
    rate, ci = win_rate([1.0, 0.5, 0.5, 0.0, 1.0])
    assert rate == 0.6 and ci == pytest.approx(list(wilson_interval(3.0, 5)))


def test_a_models_answers_against_themselves_are_all_ties(judge):
    folder, tok, scorer, answers = judge
    n = len(PROMPTS)
    v = judge_with(scorer, tok, PROMPTS, answers, list(answers), max_length=64, device=torch.device("cpu"))
    assert v["judged_prompts"] == n and v["win_rate"] == 0.5 and v["ties"] == n
    assert v["wins"] == v["losses"] == 0 and v["changed_answers"] == 0
    assert v["win_rate_changed"] is None and v["win_rate_changed_ci"] is None
    assert v["win_rate_ci"] == pytest.approx(list(wilson_interval(n / 2, n)))
    assert v["win_rate_not_longer"] == 0.5 and v["prompts_not_longer"] == n
    assert v["reward_gain"] == 0.0 and v["reward_before"] == v["reward_after"]  # an unchanged answer is scored once
    assert v["tie_tolerance"] == TIE_TOLERANCE
    # the same through reward_verdict, which loads the reward model from its folder
    v = reward_verdict(folder, PROMPTS, answers, list(answers), max_length=64, device=torch.device("cpu"))
    assert v["win_rate"] == 0.5 and v["ties"] == n and v["changed_answers"] == 0


def test_the_tolerance_covers_the_layout_noise_of_equal_texts(judge):
    _, tok, scorer, answers = judge
    # each answer scored twice in one group: the prompt-sharing layout puts the copies at different places
    # in the row, so their scores may differ in the last bits; TIE_TOLERANCE must sit well above that
    got = model_rewards(scorer, tok, [p.messages for p in PROMPTS], [[a, a] for a in answers], max_length=64,
                        device="cpu")
    assert max(abs(s[0] - s[1]) for s in got) < TIE_TOLERANCE / 10
    assert max(abs(s[0]) for s in got) > 0.5  # a head far from 0: the noise was measured at a realistic scale


def test_one_changed_answer_is_counted_and_judged_alone(judge):
    _, tok, scorer, answers = judge
    n = len(PROMPTS)
    after = list(answers)
    after[3] = answers[3] + " river river"
    v = judge_with(scorer, tok, PROMPTS, answers, after, max_length=64, device=torch.device("cpu"))
    assert v["changed_answers"] == 1 and v["ties"] + v["wins"] + v["losses"] == n
    one = v["win_rate_changed"]
    assert one in (0.0, 0.5, 1.0) and v["win_rate"] == pytest.approx(((n - 1) * 0.5 + one) / n)
    assert v["win_rate_changed_ci"] == pytest.approx(list(wilson_interval(one, 1)))
    assert v["ties"] == n - 1 + (one == 0.5)
    assert v["prompts_not_longer"] == n - 1  # the changed answer got longer
    text = win_rate_text(v)
    assert "1 of the 20 answers changed" in text and "95 % interval" in text


class _Table(torch.nn.Module):
    """A stand-in scorer: the next scores of a fixed list, in the order model_rewards lays sequences out."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, input_ids, position_ids, attention_mask, last):
        out, self.scores = self.scores[:len(last)], self.scores[len(last):]
        return torch.tensor(out)


def test_near_ties_count_half_and_wins_need_more_than_the_tolerance(judge):
    _, tok, _, _ = judge
    prompts = PROMPTS[:4]
    before = ["good", "good", "good", "same answer"]
    after = ["bad", "better", "worse", "same answer"]
    # per prompt (before, after): a near-tie, a win, a loss, and an unchanged answer scored once
    scores = [1.0, 1.0 + TIE_TOLERANCE / 2, 0.0, 1.0, 0.0, -1.0, 2.0]
    v = judge_with(_Table(scores), tok, prompts, before, after, max_length=64, device=torch.device("cpu"))
    assert (v["wins"], v["ties"], v["losses"]) == (1, 2, 1) and v["win_rate"] == 0.5
    assert v["changed_answers"] == 3 and v["win_rate_changed"] == pytest.approx(1.5 / 3)
    assert v["win_rate_changed_ci"] == pytest.approx(list(wilson_interval(1.5, 3)))
    assert v["reward_before"] == pytest.approx(3.0 / 4)
    assert v["reward_after"] == pytest.approx((3.0 + TIE_TOLERANCE / 2) / 4)
    with pytest.raises(ValueError, match="one old and one new answer per prompt"):
        judge_with(_Table(scores), tok, prompts, before, after[:3], max_length=64, device=torch.device("cpu"))
