"""answer_correct: whether a response holds a record's checkable answer, by the record's own check rule (by default the whole response or a whole word of it).

A record with an `answer` may say how to find it in a response (optional fields, the same in SFT, preference,
prompt and eval task records; parse_check reads them):

- `check`: "word" (the default: the answer is the whole response or a whole word / phrase of it), "exact" (the
  whole response), "last_number" (the last integer in the response equals the answer) or "last_word" (the last
  run of letters A-Z, a-z equals the answer); each ignores case and runs of spaces;
- `wrong_answers`: answers that make a response wrong when it names any of them as a whole word (e.g. every other
  answer of the same question type, so that listing several candidates is not right);
- `max_chars`: a response longer than this (stripped) is wrong whatever it says.

The demo's task data writes these fields (gristmill.demo.tasks.check_fields), so its answers are checked here
exactly as its own checker checks them, without this package knowing the demo.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

RULES = ("word", "exact", "last_number", "last_word")
_INT = re.compile(r"-?\d+")
_LETTERS = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class AnswerCheck:
    """How a record's answer is found in a response (see the module docstring)."""
    rule: str = "word"
    wrong_answers: tuple[str, ...] = ()
    max_chars: int | None = None


def parse_check(obj: dict, answer: str | None) -> AnswerCheck | None:
    """The `check`, `wrong_answers` and `max_chars` fields of a record (None when it has none of them); a bad
    value is a ValueError saying which field and why (the caller adds the file and line)."""
    if all(obj.get(k) is None for k in ("check", "wrong_answers", "max_chars")):
        return None
    if answer is None:
        raise ValueError("'check', 'wrong_answers' and 'max_chars' say how to check an 'answer'; the record has none")
    rule = obj.get("check") if obj.get("check") is not None else "word"
    if rule not in RULES:
        raise ValueError(f"'check' must be one of {', '.join(repr(r) for r in RULES)}, got {rule!r}")
    if rule == "last_number" and not re.fullmatch(r"\s*-?\d+\s*", answer):
        raise ValueError(f"check 'last_number' needs an integer 'answer', got {answer!r}")
    if rule == "last_word" and not _LETTERS.fullmatch(answer.strip()):
        raise ValueError(f"check 'last_word' needs an 'answer' of the letters A-Z, a-z only, got {answer!r}")
    wrong = obj.get("wrong_answers")
    if wrong is None:
        wrong = []
    if not isinstance(wrong, list) or not all(isinstance(w, str) and w.strip() for w in wrong):
        raise ValueError(f"'wrong_answers' must be a list of non-empty strings, got {wrong!r}")
    same = [w for w in wrong if _norm(w) == _norm(answer)]
    if same:
        raise ValueError(f"'wrong_answers' holds the answer itself ({same[0]!r}): no response could be right")
    limit = obj.get("max_chars")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"'max_chars' must be a positive integer, got {limit!r}")
    return AnswerCheck(rule, tuple(wrong), limit)


def answer_correct(ex: Any, response: str) -> bool:
    """Whether `response` holds `ex.answer` by `ex.check` (an AnswerCheck; None or absent: the "word" rule).

    `ex`: an SFT example, a preference pair, a prompt record or a judge.HeldOutPrompt (`task` is a label only)."""
    check = getattr(ex, "check", None) or AnswerCheck()
    text = (response or "").strip()
    if check.max_chars is not None and len(text) > check.max_chars:
        return False
    if any(_names(text, w) for w in check.wrong_answers):
        return False
    answer = str(ex.answer)
    if check.rule == "last_number":
        numbers = _INT.findall(text)
        return bool(numbers) and int(numbers[-1]) == int(answer)
    if check.rule == "last_word":
        words = _LETTERS.findall(text)
        return bool(words) and words[-1].lower() == answer.strip().lower()
    if check.rule == "exact":
        return _norm(text) == _norm(answer)
    return _names(text, answer)


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _names(text: str, answer: str) -> bool:
    """The answer is the whole text or a whole word / phrase of it (case and runs of spaces ignored)."""
    norm, want = _norm(text), _norm(answer)
    return norm == want or re.search(rf"(?<!\w){re.escape(want)}(?!\w)", norm) is not None
