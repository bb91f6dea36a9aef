"""Before / after on held-out prompts: the two models' answers, a reward model's verdict (win rate with its interval, ties, changed answers, gain, length), checked tasks, KL to the reference."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from gristmill.align.answers import AnswerCheck
from gristmill.align.chat import Encoded, EmptyMaskError, encode_chat

#: Two different answers whose reward-model scores differ by no more than this (reward units) are a tie.
#: The prompt-sharing layout (layout.lay_out_groups) computes an answer's score at another place in the
#: packed row than the same answer scored alone or as the group's other tail, so the float summation order
#: differs: the same text scored twice in one group differed by up to 1.4e-6 on a tiny fp32 reward model
#: (scores of magnitude ~6), and by ~1e-6 on the demo's. 1e-4 sits two orders of magnitude above that
#: noise and far below any difference the reward model was trained to express.
TIE_TOLERANCE = 1e-4

#: The standard normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


@dataclass
class HeldOutPrompt:
    messages: list[dict]  # ends with a user turn
    answer: str | None = None  # checkable tasks: the expected answer
    task: str | None = None
    check: AnswerCheck | None = None  # how `answer` is checked (answers.answer_correct; None: the default rule)


def held_out_prompts(records: list[Any], limit: int) -> list[HeldOutPrompt]:
    """The first `limit` distinct prompts of held-out preference records (or unpaired examples), in order."""
    out: list[HeldOutPrompt] = []
    seen: set[str] = set()
    for r in records:
        key = repr(r.prompt)
        if key in seen:
            continue
        seen.add(key)
        out.append(HeldOutPrompt(r.prompt, getattr(r, "answer", None), getattr(r, "task", None),
                                 getattr(r, "check", None)))
        if len(out) >= limit:
            break
    return out


def checked_accuracy(prompts: list[HeldOutPrompt], answers: list[str]) -> tuple[float | None, int]:
    """(exact-answer accuracy over the prompts that carry an answer, how many do); None when none do."""
    from gristmill.align.answers import answer_correct

    pairs = [(p, a) for p, a in zip(prompts, answers) if p.answer is not None]
    if not pairs:
        return None, 0
    return sum(answer_correct(p, a) for p, a in pairs) / len(pairs), len(pairs)


@torch.no_grad()
def reward_verdict(rm_dir: Path, prompts: list[HeldOutPrompt], before: list[str], after: list[str], *,
                   max_length: int, device: torch.device, batch_size: int = 8) -> dict[str, Any]:
    """Score both answers to each prompt with the reward model in `rm_dir` (its own tokenizer and template:
    the text is re-encoded, so a different tokenizer is no problem) and compare.

    See judge_with for the figures: each win rate comes with a 95 % interval, ties count half, and the
    answers the new model left unchanged are counted (and their win rate left out) separately."""
    from gristmill.align.chat import pad_id
    from gristmill.align.models import load_reward_model, load_tokenizer
    from gristmill.align.scoring import SequenceScorer

    tok = load_tokenizer(rm_dir)
    scorer = SequenceScorer(load_reward_model(rm_dir, pad=pad_id(tok), seed=0).to(device).eval())
    return judge_with(scorer, tok, prompts, before, after, max_length=max_length, device=device,
                      batch_size=batch_size)


def wilson_interval(successes: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (default 95 %) of a rate: `successes` out of `n` outcomes in [0, 1].

    Made for win rates whose outcomes are 1 (win), 0.5 (tie) and 0 (loss): pass wins + ties / 2. Wilson
    inverts |p̂ - p| <= z sqrt(p (1 - p) / n), and p (1 - p) is the largest variance any outcome in [0, 1]
    with mean p can have, so half-point ties (which lower the variance) only make it conservative. Unlike
    the normal approximation around p̂ it stays inside [0, 1] and keeps its width when every outcome in the
    sample is the same (all ties, all wins): 100 prompts that all tied do not show that every prompt would."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one outcome, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def pair_outcome(before: str, after: str, r_before: float, r_after: float, *,
                 tolerance: float = TIE_TOLERANCE) -> float:
    """1.0 when the new answer wins, 0.0 when it loses, 0.5 for a tie: the same text (whatever its scores
    say), or scores within `tolerance` reward units of each other."""
    if after == before or abs(r_after - r_before) <= tolerance:
        return 0.5
    return 1.0 if r_after > r_before else 0.0


def win_rate(outcomes: list[float]) -> tuple[float | None, list[float] | None]:
    """(mean of the 1 / 0.5 / 0 outcomes, its 95 % Wilson interval as [low, high]); (None, None) for none."""
    if not outcomes:
        return None, None
    return sum(outcomes) / len(outcomes), list(wilson_interval(sum(outcomes), len(outcomes)))


def win_rate_text(mt: dict[str, Any]) -> str:
    """report.md sentences on a verdict (judge_with's keys, as copied into a stage's metrics): the win rate
    with its interval and tie count, the changed answers and their win rate, the not-longer win rate."""
    from gristmill.align import pct

    def rate(key: str) -> str:
        ci = mt.get(f"{key}_ci")
        return f"{pct(mt.get(key))}" + (f" (95 % interval {pct(ci[0])} to {pct(ci[1])})" if ci else "")

    return (f"Win rate over the SFT model: **{rate('win_rate')}**; {mt.get('wins')} wins, {mt.get('ties')} ties, "
            f"{mt.get('losses')} losses (a tie, counted half, is an unchanged answer or scores within "
            f"{mt.get('tie_tolerance')}). {mt.get('changed_answers')} of the {mt['judged_prompts']} answers changed; "
            f"over those the win rate is {rate('win_rate_changed')}. On the {mt['prompts_not_longer']} prompts "
            f"where the new answer is not longer: {rate('win_rate_not_longer')}.")


@torch.no_grad()
def judge_with(scorer: Any, tok: Any, prompts: list[HeldOutPrompt], before: list[str], after: list[str], *,
               max_length: int, device: torch.device, batch_size: int = 8) -> dict[str, Any]:
    """reward_verdict with a reward model already loaded (`scorer`: a SequenceScorer; `tok`: its tokenizer).

    win_rate: the mean over the prompts of 1 (the new answer scores higher), 0 (lower) or 0.5 (a tie:
    the same text, or scores within TIE_TOLERANCE); win_rate_ci its 95 % Wilson interval on
    wins + ties / 2 (wilson_interval); wins / ties / losses the counts. changed_answers counts the prompts
    whose new answer text differs from the old one, and win_rate_changed (with win_rate_changed_ci) is the
    win rate over those alone: unchanged answers are ties that pull win_rate towards 0.5. win_rate_not_longer
    (with its interval) is the win rate over the prompts whose new answer has no more tokens than the old
    one, so that a win bought with length shows as such. An unchanged answer is scored once and its score
    used for both sides, so the mean rewards and the gain hold no layout noise from it."""
    from gristmill.align.rewards import model_rewards

    if not len(prompts) == len(before) == len(after):
        raise ValueError(f"judge_with needs one old and one new answer per prompt, got {len(prompts)} prompts, "
                         f"{len(before)} old and {len(after)} new answers")
    scores = model_rewards(scorer, tok, [p.messages for p in prompts],
                           [[b] if b == n else [b, n] for b, n in zip(before, after)],
                           max_length=max_length, device=device, batch_size=batch_size)
    r_before, r_after = [s[0] for s in scores], [s[-1] for s in scores]
    length = [(len(tok(b)["input_ids"]), len(tok(n)["input_ids"])) for b, n in zip(before, after)]
    outcome = [pair_outcome(b, a, rb, ra) for b, a, rb, ra in zip(before, after, r_before, r_after)]
    changed = [o for o, b, a in zip(outcome, before, after) if a != b]
    not_longer = [o for o, (lb, la) in zip(outcome, length) if la <= lb]
    n = len(outcome)
    rate, ci = win_rate(outcome)
    rate_changed, ci_changed = win_rate(changed)
    rate_not_longer, ci_not_longer = win_rate(not_longer)
    return {"judged_prompts": n, "win_rate": rate, "win_rate_ci": ci,
            "wins": outcome.count(1.0), "ties": outcome.count(0.5), "losses": outcome.count(0.0),
            "tie_tolerance": TIE_TOLERANCE,
            "changed_answers": len(changed), "win_rate_changed": rate_changed, "win_rate_changed_ci": ci_changed,
            "reward_before": sum(r_before) / n if n else None, "reward_after": sum(r_after) / n if n else None,
            "reward_gain": (sum(r_after) - sum(r_before)) / n if n else None,
            "answer_tokens_before": sum(b for b, _ in length) / n if n else None,
            "answer_tokens_after": sum(a for _, a in length) / n if n else None,
            "win_rate_not_longer": rate_not_longer, "win_rate_not_longer_ci": ci_not_longer,
            "prompts_not_longer": len(not_longer)}


@torch.no_grad()
def kl_to_reference(policy_logps: Callable[[list[list[Encoded]]], torch.Tensor],
                    reference_logps: Callable[[list[list[Encoded]]], torch.Tensor], tok: Any,
                    prompts: list[HeldOutPrompt], samples: list[str], *, max_length: int) -> float | None:
    """KL(π || π_ref) per prompt, estimated as the mean of log π(y|x) - log π_ref(y|x) over answers y sampled
    from π (the k1 estimator: unbiased, one sample per prompt), the answers re-encoded with the template.
    `*_logps(groups)` return each sequence's summed completion log-prob. Empty answers are left out."""
    groups = []
    for p, text in zip(prompts, samples):
        try:
            groups.append([encode_chat(tok, p.messages + [{"role": "assistant", "content": text}],
                                       max_length=max_length, completion_turns=1)])
        except EmptyMaskError:
            continue
    if not groups:
        return None
    diffs: list[float] = []
    for i in range(0, len(groups), 8):
        chunk = groups[i:i + 8]
        diffs += (policy_logps(chunk) - reference_logps(chunk)).tolist()
    return sum(diffs) / len(diffs)
