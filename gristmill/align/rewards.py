"""Rewards for responses to chat prompts: a reward model's score (the text re-encoded in its own template) or a checker's 1 / 0."""
from __future__ import annotations

from typing import Any

import torch


def render_ids(tok: Any, messages: list[dict], max_length: int) -> list[int]:
    """A whole conversation in `tok`'s chat template, its last max_length tokens (an empty reply included)."""
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return list(ids)[-max_length:]


@torch.no_grad()
def model_rewards(scorer: Any, tok: Any, prompts: list[list[dict]], responses: list[list[str]], *,
                  max_length: int, device: torch.device | str, batch_size: int = 8) -> list[list[float]]:
    """The reward model's score for each response to each prompt (`responses[i]`: the answers to prompt i).

    Each prompt and its answers are rendered as text by the reward model's own tokenizer `tok`, so a
    policy with another tokenizer is scored correctly, and laid out as one group (the prompt's tokens
    computed once). `scorer`: a scoring.SequenceScorer around the reward model."""
    from gristmill.align.chat import pad_id
    from gristmill.align.scoring import collate_groups

    groups = [[render_ids(tok, p + [{"role": "assistant", "content": a}], max_length) for a in answers]
              for p, answers in zip(prompts, responses)]
    flat: list[float] = []
    for i in range(0, len(groups), batch_size):
        batch = collate_groups(groups[i:i + batch_size], pad_id=pad_id(tok), max_length=max_length, packed=True,
                               device=device)
        flat += scorer(**batch).tolist()
    out, at = [], 0
    for answers in responses:
        out.append(flat[at:at + len(answers)])
        at += len(answers)
    return out


def checker_rewards(prompts: list[Any], responses: list[str]) -> list[float]:
    """1.0 where the response holds the prompt's expected answer by the prompt's check rule
    (answers.answer_correct: by default the answer as the whole response or a whole word of it), 0.0 elsewhere.
    `prompts` carry messages, answer and check (judge.HeldOutPrompt, data.PromptRecord); one without an answer
    is an error, not a 0."""
    from gristmill.align import AlignError
    from gristmill.align.answers import answer_correct

    missing = [i for i, p in enumerate(prompts) if p.answer is None]
    if missing:
        raise AlignError(f"{len(missing)} prompts have no 'answer' to check (first: prompt {missing[0]}); the "
                         "checker reward needs {prompt, answer} records")
    return [1.0 if answer_correct(p, r) else 0.0 for p, r in zip(prompts, responses)]
