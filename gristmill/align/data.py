"""Alignment data: SFT examples, preference pairs and prompts read from JSONL / JSON files, with per-line errors.

Files are JSON Lines or one JSON array of records (told apart by the first character, whatever the
suffix), plain or compressed with gzip or zstd (told apart by the magic bytes). Accepted records:

- SFT: Alpaca `{instruction, input?, response | output, system?}`; `{messages: [{role, content}, ...]}`;
  self-instruct seed tasks `{instruction, instances: [{input, output}, ...]}` (one example per instance).
- Preferences: `{prompt, chosen, rejected, margin?}` (prompt a string or a message list, chosen and
  rejected strings or assistant message lists); `{chosen, rejected}` with no prompt: Anthropic HH
  strings ("\\n\\nHuman: ... \\n\\nAssistant: ...") or whole conversations, whose shared turns are the prompt.
- Unpaired (KTO): `{prompt, completion, label}` (label true = desirable), or preference records split in two.
- Prompts: `{prompt}` or `{messages}` ending with a user turn; HH `{chosen, ...}`: up to its last Human turn.

SFT, preference and prompt records may carry a checkable `answer`, a `task` label, and how the answer is checked:
`check` ("word", "exact", "last_number", "last_word"), `wrong_answers` and `max_chars` (answers.parse_check); they
are kept (the check as an answers.AnswerCheck).
A malformed record stops the load with `path:line` and the problem, or with `on_error="skip"` is
skipped and listed. A degenerate preference pair (chosen == rejected, or one side empty) is never
trained on and always listed, in both modes. A missing file, or one with no usable record, is an error.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generic, Iterator, Literal, Sequence, TypeVar

from gristmill.align import AlignError
from gristmill.align.answers import AnswerCheck, parse_check

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
ROLES = ("system", "user", "assistant")
T = TypeVar("T")

SFT_FORMATS = ("Alpaca {instruction, input?, response | output}; {messages: [{role, content}, ...]}; "
               "self-instruct {instruction, instances: [{input, output}, ...]}")
PREFERENCE_FORMATS = ("{prompt, chosen, rejected, margin?}; Anthropic HH {chosen, rejected} "
                      "(\"\\n\\nHuman: ... \\n\\nAssistant: ...\" strings or message lists)")
UNPAIRED_FORMATS = "{prompt, completion, label: true | false}; or any preference record (chosen: true, rejected: false)"
PROMPT_FORMATS = "{prompt, answer?, task?}; {messages: [..., user turn]}; Anthropic HH {chosen: \"\\n\\nHuman: ...\"}"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_LISTED = 100  # skipped / degenerate lines written into the manifest summary (the counts are complete)


@dataclass(kw_only=True)
class DataConfig:
    #: what a malformed record does: "error" stops with file:line and the problem; "skip" skips it
    #: and records it in the manifest
    on_error: Literal["error", "skip"] = "error"
    #: with no --eval files: this fraction of records (chosen by a hash of the record, stable as the
    #: file grows) is held out
    eval_fraction: float = 0.05
    #: read at most this many records per file (after skipping bad ones); 0 = all. For quick runs
    #: on a subset of real data
    max_records: int = 0

    def __post_init__(self) -> None:
        # ValueError: gristmill.config.build prefixes the section ("[sft.data] eval_fraction=...").
        if self.on_error not in ("error", "skip"):
            raise ValueError(f"on_error={self.on_error!r} must be \"error\" or \"skip\"")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction} must be >= 0 and < 1; e.g. 0.05 "
                             "(0 = no held-out split)")
        if self.max_records < 0:
            raise ValueError(f"max_records={self.max_records} must be >= 0 (0 = every record)")


@dataclass
class SFTExample:
    messages: list[Message]
    source: str          # "path:line" (or "path:line#instance" for self-instruct instances)
    key: str             # hex sha256 of the canonical record content (used for the eval split)
    answer: str | None = None
    task: str | None = None
    check: AnswerCheck | None = None  # how `answer` is checked (None: the default rule)


@dataclass
class PreferencePair:
    prompt: list[Message]      # ends with a user turn
    chosen: list[Message]      # assistant turn(s)
    rejected: list[Message]
    source: str
    key: str
    margin: float | None = None
    answer: str | None = None  # a checkable answer, for before/after accuracy
    task: str | None = None
    check: AnswerCheck | None = None


@dataclass
class UnpairedExample:
    """One completion judged on its own (KTO): desirable or not."""
    prompt: list[Message]      # ends with a user turn
    completion: list[Message]  # assistant turn(s)
    desirable: bool
    source: str
    key: str                   # a pair's two halves share the pair's key: the eval split keeps them together


@dataclass
class PromptRecord:
    messages: list[Message]    # ends with a user turn
    source: str
    key: str
    answer: str | None = None
    task: str | None = None
    check: AnswerCheck | None = None


@dataclass
class Skipped:
    source: str   # "path:line"
    reason: str


@dataclass
class Loaded(Generic[T]):
    records: list[T]
    skipped: list[Skipped]      # malformed records skipped under on_error="skip"
    degenerate: list[Skipped]   # degenerate preference pairs (never trained on, always reported)
    files: list[Path]
    per_file: list[dict] = field(default_factory=list)  # per file: counts, formats read, stopped at max_records

    def summary(self) -> dict:
        """JSON-ready counts for the manifest; the lists name the first MAX_LISTED lines."""
        return {"records": len(self.records),
                "skipped": len(self.skipped),
                "skipped_lines": [{"source": s.source, "reason": s.reason} for s in self.skipped[:MAX_LISTED]],
                "degenerate": len(self.degenerate),
                "degenerate_lines": [{"source": s.source, "reason": s.reason} for s in self.degenerate[:MAX_LISTED]],
                "files": self.per_file or [{"path": str(p)} for p in self.files]}


class _Bad(Exception):
    """A malformed record; the message says what is wrong with it."""


@dataclass
class _Problem:
    """One record (or self-instruct instance) that yields nothing: malformed, or a degenerate pair."""
    source: str
    reason: str
    degenerate: bool = False


# ------------------------------------------------------------------------------------------------
# Public loaders


def load_sft(paths: Sequence[Path], cfg: DataConfig, *, stage: str = "sft") -> Loaded[SFTExample]:
    """SFT examples from every file, in file order. `stage` names the `--set` key in error messages."""
    return _load(paths, cfg, stage, _sft_items, SFT_FORMATS)


def load_preferences(paths: Sequence[Path], cfg: DataConfig, *, stage: str = "reward") -> Loaded[PreferencePair]:
    """Preference pairs from every file; degenerate pairs are listed in `.degenerate`, not returned."""
    return _load(paths, cfg, stage, _pair_items, PREFERENCE_FORMATS)


def load_unpaired(paths: Sequence[Path], cfg: DataConfig, *, stage: str = "dpo") -> Loaded[UnpairedExample]:
    """Unpaired examples (KTO) from every file: `{prompt, completion, label}` records, and preference
    records split into their chosen (desirable) and rejected (undesirable) halves."""
    return _load(paths, cfg, stage, _unpaired_items, UNPAIRED_FORMATS)


def load_prompts(paths: Sequence[Path], cfg: DataConfig, *, stage: str = "ppo") -> Loaded[PromptRecord]:
    """Prompts (each ending with a user turn) from every file, with `answer` / `task` where given."""
    return _load(paths, cfg, stage, _prompt_items, PROMPT_FORMATS)


def split_eval(records: list[T], fraction: float) -> tuple[list[T], list[T]]:
    """(train, eval), each in input order. A record is held out when a hash of its `key` falls below
    `fraction`: its side depends on itself only, so records appended to a file never move old ones.
    When that picks no record (tiny sets; fraction > 0, 2+ records) the lowest hash is held out, and
    when it picks them all (a single record) the highest stays in train; only in those cases can
    growth move a record."""
    if fraction <= 0 or not records:
        return list(records), []
    h = [_unit_hash(r.key) for r in records]  # in [0, 1)
    held = [x < fraction for x in h]
    if len(records) >= 2 and not any(held):
        held[min(range(len(h)), key=h.__getitem__)] = True
    if all(held):  # keep something to train on
        held[max(range(len(h)), key=h.__getitem__)] = False
    return [r for r, e in zip(records, held) if not e], [r for r, e in zip(records, held) if e]


def parse_hh(text: str) -> list[Message]:
    """An Anthropic HH conversation ("\\n\\nHuman: ...\\n\\nAssistant: ...") -> messages.

    A turn starts at "Human:" / "Assistant:" at the start of the text or after a blank line; the
    same word elsewhere ("Assistant: Human: ...", which the real data has) is text. Contents are
    stripped, empty turns (a final "Assistant:" with no reply) are dropped, and consecutive turns of
    one speaker (a doubled marker, or both sides of a dropped empty turn) are joined with a blank
    line, so the roles alternate. Text before the first turn is a ValueError; "" gives [].
    """
    parts = _HH_TURN.split(text.lstrip())  # [before, speaker, text, speaker, text, ...]
    if parts[0].strip():
        raise ValueError(f"text before the first \"Human:\" turn: {_clip(parts[0])!r}")
    turns: list[Message] = []
    for speaker, body in zip(parts[1::2], parts[2::2]):
        content = body.strip()
        if not content:
            continue
        role = "user" if speaker == "Human" else "assistant"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return turns


_HH_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")


# ------------------------------------------------------------------------------------------------
# The loop shared by the three loaders


def _load(paths: Sequence[Path], cfg: DataConfig, stage: str,
          parse: Callable[[Any, str, str], tuple[str, list]], formats: str) -> Loaded:
    records: list = []
    skipped: list[Skipped] = []
    degenerate: list[Skipped] = []
    per_file: list[dict] = []
    files = [Path(p) for p in paths]
    if not files:
        raise AlignError("no data files given; pass at least one --data FILE")
    for path in files:
        if path.is_dir():
            raise AlignError(f"{path}: is a folder; give the data files themselves (e.g. {path}/*.jsonl)")
        if not path.is_file():
            raise AlignError(f"{path}: no such file")
        n = {"records": 0, "skipped": 0, "degenerate": 0}
        seen_formats: dict[str, int] = {}
        cut = False
        for source, obj in _read_records(path):
            try:
                if isinstance(obj, _Bad):
                    raise obj
                if not isinstance(obj, dict):
                    raise _Bad(f"a record must be a JSON object, got {_kind(obj)}")
                fmt, items = parse(obj, source, _record_key(obj))
            except _Bad as e:
                items, fmt = [_Problem(source, str(e))], None
            for item in items:
                if isinstance(item, _Problem) and item.degenerate:
                    degenerate.append(Skipped(item.source, item.reason))
                    n["degenerate"] += 1
                elif isinstance(item, _Problem):
                    if cfg.on_error == "error":
                        raise AlignError(f"{item.source}: {item.reason}; fix the record, or "
                                         f"--set {stage}.data.on_error=skip skips such records")
                    skipped.append(Skipped(item.source, item.reason))
                    n["skipped"] += 1
                elif not cut:
                    records.append(item)
                    n["records"] += 1
                    cut = 0 < cfg.max_records <= n["records"]
            if fmt:
                seen_formats[fmt] = seen_formats.get(fmt, 0) + 1
            if cut:
                break
        if n["records"] == 0:
            first = (skipped[-n["skipped"]] if n["skipped"] else
                     degenerate[-n["degenerate"]] if n["degenerate"] else None)
            detail = (f" ({n['skipped']} malformed, {n['degenerate']} degenerate; first: {first.source}: "
                      f"{first.reason})") if first else " (the file is empty)"
            raise AlignError(f"{path}: no usable record{detail}; expected records like {formats}")
        per_file.append({"path": str(path), **n, "formats": seen_formats, "stopped_at_max_records": cut})
    return Loaded(records=records, skipped=skipped, degenerate=degenerate, files=files, per_file=per_file)


# ------------------------------------------------------------------------------------------------
# Record parsers: (format name, [record or _Problem, ...]); a malformed record raises _Bad


def _sft_items(obj: dict, source: str, key: str) -> tuple[str, list]:
    answer, task = _answer(obj), _opt_str(obj, "task")
    check = _check(obj, answer)
    if "messages" in obj:
        msgs = _messages(obj["messages"], "messages")
        if not any(m["role"] == "assistant" for m in msgs):
            raise _Bad("messages has no assistant turn; SFT trains on the assistant's turns")
        if msgs[-1]["role"] != "assistant":
            raise _Bad(f"messages ends with {_a(msgs[-1]['role'])} turn; the last turn must be the assistant's "
                       "(nothing after it would be trained on)")
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and not m["content"].strip():
                raise _Bad(f"messages[{i}] is an assistant turn with empty content")
        return "messages", [SFTExample(messages=msgs, source=source, key=key, answer=answer, task=task, check=check)]
    if "instruction" in obj and "instances" in obj:
        system, instruction = _opt_str(obj, "system"), _text(obj, "instruction")
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances:
            raise _Bad(f"'instances' must be a non-empty list of {{input, output}} objects, got {_kind(instances)}")
        # Instances of one task share the record's key, so they land on the same side of the eval split.
        out: list = []
        for i, inst in enumerate(instances, 1):
            where = f"{source}#{i}"
            try:
                if not isinstance(inst, dict):
                    raise _Bad(f"instances[{i - 1}] must be an {{input, output}} object, got {_kind(inst)}")
                msgs = _alpaca(system, instruction, _opt_str(inst, "input") or "", _text(inst, "output"))
                out.append(SFTExample(messages=msgs, source=where, key=key, answer=answer, task=task, check=check))
            except _Bad as e:
                out.append(_Problem(where, f"instances[{i - 1}]: {e}"))
        return "self-instruct", out
    if "instruction" in obj:
        if "response" in obj and "output" in obj:
            raise _Bad("has both 'response' and 'output'; keep one")
        if "response" not in obj and "output" not in obj:
            raise _Bad(f"has 'instruction' but no 'response' or 'output' (keys: {_keys(obj)})")
        response = _text(obj, "response" if "response" in obj else "output")
        msgs = _alpaca(_opt_str(obj, "system"), _text(obj, "instruction"), _opt_str(obj, "input") or "", response)
        return "alpaca", [SFTExample(messages=msgs, source=source, key=key, answer=answer, task=task, check=check)]
    raise _Bad(f"matches no SFT format (keys: {_keys(obj)}); accepted: {SFT_FORMATS}")


def _alpaca(system: str | None, instruction: str, input_: str, response: str) -> list[Message]:
    user = instruction + ("\n\n" + input_ if input_.strip() else "")
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def _pair_items(obj: dict, source: str, key: str) -> tuple[str, list]:
    if "chosen" not in obj or "rejected" not in obj:
        raise _Bad(f"matches no preference format (keys: {_keys(obj)}); accepted: {PREFERENCE_FORMATS}")
    margin = obj.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin)):
        raise _Bad(f"'margin' must be a finite number, got {_kind(margin)}")
    if "prompt" in obj:
        fmt, prompt = "prompt-chosen-rejected", _prompt(obj["prompt"], "prompt")
        chosen, rejected = _reply(obj["chosen"], "chosen", prompt), _reply(obj["rejected"], "rejected", prompt)
    else:
        c, r = obj["chosen"], obj["rejected"]
        if isinstance(c, str) and isinstance(r, str):
            fmt, c, r = "hh", _hh(c, "chosen"), _hh(r, "rejected")
        elif isinstance(c, list) and isinstance(r, list):
            fmt, c, r = "conversations", _messages(c, "chosen"), _messages(r, "rejected")
        else:
            raise _Bad(f"with no 'prompt', chosen and rejected must both be HH strings or both message lists; "
                       f"got {_kind(c)} and {_kind(r)}")
        prompt, chosen, rejected = _shared_prompt(c, r)
    reason = _degenerate(chosen, rejected)
    if reason:
        return fmt, [_Problem(source, f"degenerate pair: {reason}", degenerate=True)]
    answer = _answer(obj)
    return fmt, [PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, source=source, key=key,
                                margin=None if margin is None else float(margin), answer=answer,
                                task=_opt_str(obj, "task"), check=_check(obj, answer))]


def _unpaired_items(obj: dict, source: str, key: str) -> tuple[str, list]:
    if "completion" not in obj:
        if "chosen" not in obj:
            raise _Bad(f"matches no unpaired format (keys: {_keys(obj)}); accepted: {UNPAIRED_FORMATS}")
        fmt, items = _pair_items(obj, source, key)
        out: list = []
        for x in items:
            out += [x] if isinstance(x, _Problem) else [UnpairedExample(x.prompt, x.chosen, True, source, key),
                                                        UnpairedExample(x.prompt, x.rejected, False, source, key)]
        return fmt, out
    if "prompt" not in obj:
        raise _Bad("'prompt' is missing (an unpaired record is {prompt, completion, label})")
    label = obj.get("label")
    if not isinstance(label, bool):
        raise _Bad(f"'label' must be true (desirable) or false (undesirable), got {_kind(label)}")
    prompt = _prompt(obj["prompt"], "prompt")
    completion = _reply(obj["completion"], "completion", prompt)
    if not _reply_text(completion):
        raise _Bad("'completion' is empty")
    return "prompt-completion-label", [UnpairedExample(prompt, completion, label, source, key)]


def _reply(value: Any, name: str, prompt: list[Message]) -> list[Message]:
    """chosen / rejected next to an explicit prompt: a string (one assistant turn) or assistant turns;
    a list that repeats the prompt first (whole conversations) has it removed."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}] if value.strip() else []
    if value == []:
        return []  # an empty side: a degenerate pair, reported by the caller
    msgs = _messages(value, name)
    if msgs[:len(prompt)] == prompt:
        msgs = msgs[len(prompt):]
    for m in msgs:
        if m["role"] != "assistant":
            raise _Bad(f"{name} has {_a(m['role'])} turn; chosen and rejected hold the assistant's reply only "
                       "(the conversation before it goes in 'prompt')")
    return msgs


def _shared_prompt(c: list[Message], r: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """Two whole conversations -> (prompt, chosen, rejected): the prompt is their shared turns up to the
    last shared user turn; the rest of each is its reply. A Human turn left unanswered at the end of
    one side is dropped (the real HH data has a few); a reply that still holds a user turn is an error."""
    k = 0
    while k < min(len(c), len(r)) and c[k] == r[k]:
        k += 1
    while k > 0 and c[k - 1]["role"] != "user":
        k -= 1
    prompt, rest_c, rest_r = c[:k], _drop_trailing_user(c[k:]), _drop_trailing_user(r[k:])
    if not rest_c or not rest_r or rest_c == rest_r:
        return prompt, rest_c, rest_r  # degenerate; reported by the caller
    if k == 0:
        raise _Bad("chosen and rejected do not start with the same user (Human) turn, so there is no shared prompt")
    for name, rest in (("chosen", rest_c), ("rejected", rest_r)):
        if any(m["role"] == "user" for m in rest):
            raise _Bad(f"chosen and rejected differ before their last user (Human) turn (at turn {k + 1} of "
                       f"{name}); a pair must share the conversation up to the reply it compares")
    return prompt, rest_c, rest_r


def _drop_trailing_user(msgs: list[Message]) -> list[Message]:
    while msgs and msgs[-1]["role"] == "user":
        msgs = msgs[:-1]
    return msgs


def _degenerate(chosen: list[Message], rejected: list[Message]) -> str | None:
    c, r = _reply_text(chosen), _reply_text(rejected)
    if c == r:
        return "chosen and rejected are the same" + (" (both empty)" if not c else "")
    if not c:
        return "chosen is empty"
    if not r:
        return "rejected is empty"
    return None


def _reply_text(msgs: list[Message]) -> tuple[str, ...]:
    return tuple(m["content"].strip() for m in msgs if m["content"].strip())


def _prompt_items(obj: dict, source: str, key: str) -> tuple[str, list]:
    answer, task = _answer(obj), _opt_str(obj, "task")
    check = _check(obj, answer)
    if "prompt" in obj:
        fmt, msgs = "prompt", _prompt(obj["prompt"], "prompt")
    elif "messages" in obj:
        fmt, msgs = "messages", _prompt(obj["messages"], "messages")
    elif "chosen" in obj:
        c = obj["chosen"]
        fmt, turns = ("hh", _hh(c, "chosen")) if isinstance(c, str) else ("conversations", _messages(c, "chosen"))
        last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=-1)
        if last_user < 0:
            raise _Bad("chosen has no user (Human) turn to take the prompt from")
        msgs = turns[:last_user + 1]
    else:
        raise _Bad(f"matches no prompt format (keys: {_keys(obj)}); accepted: {PROMPT_FORMATS}")
    return fmt, [PromptRecord(messages=msgs, source=source, key=key, answer=answer, task=task, check=check)]


def _prompt(value: Any, name: str) -> list[Message]:
    """A prompt: a non-empty string (one user turn) or messages ending with a non-empty user turn."""
    if isinstance(value, str):
        if not value.strip():
            raise _Bad(f"'{name}' is empty")
        return [{"role": "user", "content": value}]
    msgs = _messages(value, name)
    if msgs[-1]["role"] != "user":
        raise _Bad(f"'{name}' ends with {_a(msgs[-1]['role'])} turn; a prompt ends with the user's turn")
    if not msgs[-1]["content"].strip():
        raise _Bad(f"'{name}' ends with an empty user turn")
    return msgs


# ------------------------------------------------------------------------------------------------
# Field checks


def _messages(value: Any, name: str) -> list[Message]:
    """A non-empty list of {role, content} (other keys ignored); a system message may only come first."""
    if not isinstance(value, list) or not value:
        raise _Bad(f"'{name}' must be a non-empty list of {{role, content}} objects, got {_kind(value)}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _Bad(f"{name}[{i}] must be a {{role, content}} object, got {_kind(m)}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise _Bad(f"{name}[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _Bad(f"{name}[{i}].content must be a string, got {_kind(content)}")
        if role == "system" and i > 0:
            raise _Bad(f"{name}[{i}] is a system message; only the first message may be one")
        out.append({"role": role, "content": content})
    return out


def _hh(value: Any, name: str) -> list[Message]:
    if not isinstance(value, str):
        raise _Bad(f"'{name}' must be a string, got {_kind(value)}")
    try:
        turns = parse_hh(value)
    except ValueError as e:
        raise _Bad(f"'{name}' is not an Anthropic HH conversation: {e}") from None
    if value.strip() and not turns:
        raise _Bad(f"'{name}' has no \"\\n\\nHuman:\" / \"\\n\\nAssistant:\" turn")
    return turns


def _text(obj: dict, name: str) -> str:
    """A required string field with some non-space text."""
    v = obj.get(name)
    if not isinstance(v, str):
        raise _Bad(f"'{name}' must be a string, got {_kind(v)}" if name in obj else f"'{name}' is missing")
    if not v.strip():
        raise _Bad(f"'{name}' is empty")
    return v


def _opt_str(obj: dict, name: str) -> str | None:
    v = obj.get(name)
    if v is not None and not isinstance(v, str):
        raise _Bad(f"'{name}' must be a string, got {_kind(v)}")
    return v


def _answer(obj: dict) -> str | None:
    v = obj.get("answer")
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # {"answer": 12} is checked as "12"
    if v is not None and not isinstance(v, str):
        raise _Bad(f"'answer' must be a string or an integer, got {_kind(v)}")
    return v


def _check(obj: dict, answer: str | None) -> AnswerCheck | None:
    try:
        return parse_check(obj, answer)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _kind(v: Any) -> str:
    name = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)
    return f"{name} ({_clip(json.dumps(v, ensure_ascii=False, default=str))})" if v is not None else name


def _a(role: str) -> str:
    return f"an {role}" if role == "assistant" else f"a {role}"


def _keys(obj: dict) -> str:
    return ", ".join(sorted(obj)) or "none"


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n] + "..."


# ------------------------------------------------------------------------------------------------
# Files, keys and hashes


def _record_key(obj: Any) -> str:
    """sha256 of the record's canonical JSON: the same record gives the same key in any file, any layout."""
    canon = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _unit_hash(key: str) -> float:
    """A record's place in [0, 1) for the eval split (salted, so it is not just the key's own prefix)."""
    d = hashlib.sha256(b"gristmill.align.eval/" + key.encode("utf-8")).digest()
    return int.from_bytes(d[:8], "big") / 2.0 ** 64


def _read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, parsed record or _Bad) for each record: "path:line" for JSON Lines (blank lines
    skipped), "path:record N" for a JSON array. An unreadable file is an AlignError."""
    try:
        with open(path, "rb") as raw:
            stream = _decompressed(raw)
            head: list[bytes] = []  # lines up to the first one with text, to tell an array from JSON Lines
            for line in stream:
                head.append(line)
                if line.strip():
                    break
            first = head[-1].lstrip().removeprefix(b"\xef\xbb\xbf").lstrip() if head else b""
            if first.startswith(b"["):
                yield from _array_records(path, b"".join(head) + stream.read())
                return
            for lineno, line in enumerate(_chain(head, stream), 1):
                if lineno == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError:
                    obj = _Bad("not UTF-8 text")
                except json.JSONDecodeError as e:
                    if line.strip() == b"{" and lineno == len(head):  # the first record line
                        raise AlignError(f"{path}: one JSON object spread over several lines; expected one "
                                         "record per line (JSON Lines) or a top-level array of records") from None
                    obj = _Bad(f"not valid JSON ({e.msg} at column {e.colno})")
                yield f"{path}:{lineno}", obj
    except (OSError, EOFError, zlib.error) as e:
        raise AlignError(f"{path}: cannot read it ({e}); is it a complete .gz / .zst file?") from None
    except _zstd_error() as e:
        raise AlignError(f"{path}: cannot read it ({e}); is it a complete .zst file?") from None


def _array_records(path: Path, data: bytes) -> Iterator[tuple[str, Any]]:
    try:
        items = json.loads(data)
    except UnicodeDecodeError:
        raise AlignError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one array per line: JSON Lines whose records are not objects
            for lineno, line in enumerate(data.splitlines(), 1):
                if line.strip():
                    try:
                        yield f"{path}:{lineno}", json.loads(line)
                    except ValueError as e2:
                        yield f"{path}:{lineno}", _Bad(f"not valid JSON ({e2})")
            return
        raise AlignError(f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); a file starting "
                         "with '[' must be one JSON array of records") from None
    for i, item in enumerate(items, 1):
        yield f"{path}:record {i}", item


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The file's bytes, gunzipped or un-zstd'ed when its magic bytes say so (the suffix is not trusted)."""
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == ZSTD_MAGIC:
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


def _chain(head: list[bytes], stream: BinaryIO) -> Iterator[bytes]:
    yield from head
    yield from stream


def _zstd_error() -> type[BaseException]:
    try:
        import zstandard

        return zstandard.ZstdError
    except ImportError:  # pragma: no cover - zstandard is a dependency
        return OSError
