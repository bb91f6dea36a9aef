"""Before / after on held-out prompts: the two models' answers, a reward model's verdict (win rate, gain, length), checked tasks, KL to the reference."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from gristmill.align.chat import Encoded, EmptyMaskError, encode_chat


@dataclass
class HeldOutPrompt:
    messages: list[dict]  # ends with a user turn
    answer: str | None = None  # checkable tasks: the expected answer
    task: str | None = None


def held_out_prompts(records: list[Any], limit: int) -> list[HeldOutPrompt]:
    """The first `limit` distinct prompts of held-out preference records (or unpaired examples), in order."""
    out: list[HeldOutPrompt] = []
    seen: set[str] = set()
    for r in records:
        key = repr(r.prompt)
        if key in seen:
            continue
        seen.add(key)
        out.append(HeldOutPrompt(r.prompt, getattr(r, "answer", None), getattr(r, "task", None)))
        if len(out) >= limit:
            break
    return out


def checked_accuracy(prompts: list[HeldOutPrompt], answers: list[str]) -> tuple[float | None, int]:
    """(exact-answer accuracy over the prompts that carry an answer, how many do); None when none do."""
    from gristmill.align.sft import answer_correct

    pairs = [(p, a) for p, a in zip(prompts, answers) if p.answer is not None]
    if not pairs:
        return None, 0
    return sum(answer_correct(p, a) for p, a in pairs) / len(pairs), len(pairs)


@torch.no_grad()
def reward_verdict(rm_dir: Path, prompts: list[HeldOutPrompt], before: list[str], after: list[str], *,
                   max_length: int, device: torch.device, batch_size: int = 8) -> dict[str, Any]:
    """Score both answers to each prompt with the reward model in `rm_dir` (its own tokenizer and template:
    the text is re-encoded, so a different tokenizer is no problem) and compare.

    win_rate counts a tie as half; win_rate_not_longer is the same over the prompts whose new answer has
    no more tokens than the old one, so that a win bought with length shows as such."""
    from gristmill.align.chat import pad_id
    from gristmill.align.models import load_reward_model, load_tokenizer
    from gristmill.align.scoring import SequenceScorer

    tok = load_tokenizer(rm_dir)
    scorer = SequenceScorer(load_reward_model(rm_dir, pad=pad_id(tok), seed=0).to(device).eval())
    return judge_with(scorer, tok, prompts, before, after, max_length=max_length, device=device,
                      batch_size=batch_size)


@torch.no_grad()
def judge_with(scorer: Any, tok: Any, prompts: list[HeldOutPrompt], before: list[str], after: list[str], *,
               max_length: int, device: torch.device, batch_size: int = 8) -> dict[str, Any]:
    """reward_verdict with a reward model already loaded (`scorer`: a SequenceScorer; `tok`: its tokenizer)."""
    from gristmill.align.rewards import model_rewards

    scores = model_rewards(scorer, tok, [p.messages for p in prompts], [[b, n] for b, n in zip(before, after)],
                           max_length=max_length, device=device, batch_size=batch_size)
    r_before, r_after = [s[0] for s in scores], [s[1] for s in scores]
    length = [(len(tok(b)["input_ids"]), len(tok(n)["input_ids"])) for b, n in zip(before, after)]
    win = [1.0 if a > b else 0.5 if a == b else 0.0 for b, a in zip(r_before, r_after)]
    not_longer = [w for w, (lb, la) in zip(win, length) if la <= lb]
    n = len(win)
    return {"judged_prompts": n, "win_rate": sum(win) / n if n else None,
            "reward_before": sum(r_before) / n if n else None, "reward_after": sum(r_after) / n if n else None,
            "reward_gain": (sum(r_after) - sum(r_before)) / n if n else None,
            "answer_tokens_before": sum(b for b, _ in length) / n if n else None,
            "answer_tokens_after": sum(a for _, a in length) / n if n else None,
            "win_rate_not_longer": sum(not_longer) / len(not_longer) if not_longer else None,
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
