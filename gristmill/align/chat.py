"""Chat rendering: a conversation -> token ids and labels (-100 except assistant turns), template checks, truncation."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from gristmill.align import AlignError

IGNORE = -100  # the label cross-entropy skips (system, user, template scaffolding, padding)

# `{% generation %}` (any whitespace, optional `-` trim marks): the template marks the assistant tokens itself.
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


class EmptyMaskError(AlignError):
    """A conversation with nothing to train on: no assistant token, or an empty assistant turn."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE except on assistant turns (content + end-of-turn token); not shifted
    truncated: bool = False


def chat_template(tokenizer: Any) -> str | None:
    """The template string; a tokenizer with several named templates gives its "default" one."""
    t = getattr(tokenizer, "chat_template", None)
    if isinstance(t, dict):
        t = t.get("default")
    return t or None


def has_generation_marks(tokenizer: Any) -> bool:
    t = chat_template(tokenizer)
    return bool(t and _GENERATION.search(t))


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with: the pad token, else eos (padding is never attended to nor trained on)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def template_info(tokenizer: Any) -> dict:
    """What a later stage must find unchanged (JSON-ready, for the manifest): template hash and special tokens."""
    t = chat_template(tokenizer)
    info: dict = {"chat_template_sha256": hashlib.sha256(t.encode("utf-8")).hexdigest() if t else None}
    for name in ("eos", "pad", "bos"):
        info[f"{name}_token"] = getattr(tokenizer, f"{name}_token", None)
        info[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id", None)
    info["has_generation_marks"] = has_generation_marks(tokenizer)
    return info


def check_template(tokenizer: Any, where: str) -> None:
    """AlignError unless the tokenizer can render chats and pad batches; `where` names the model / tokenizer folder."""
    if chat_template(tokenizer) is None:
        raise AlignError(f"{where}: the tokenizer has no chat_template; set one (\"chat_template\" in "
                         "tokenizer_config.json, or chat_template.jinja) or use a gristmill tokenizer (ChatML)")
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise AlignError(f"{where}: the tokenizer has neither a pad token nor an eos token to pad with; set "
                         "\"pad_token\" in tokenizer_config.json")


def _render(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool, where: str = "") -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja's TemplateError, or raise_exception() inside the template
        raise AlignError(f"{where or 'conversation'}: the chat template refused it: {e}") from None


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The template writes any BOS itself, so nothing is added (as apply_chat_template(tokenize=True) does).
    return list(tokenizer.encode(text, add_special_tokens=False))


def assistant_mask_from_template(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(ids, mask) from the template's own `{% generation %}` marks: mask 1 on the tokens inside them."""
    if not has_generation_marks(tokenizer):
        raise AlignError("the chat template has no {% generation %} marks; use assistant_mask_by_prefixes")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(out["input_ids"]), [int(m) for m in out["assistant_masks"]]


def assistant_mask_by_prefixes(tokenizer: Any, messages: list[dict], where: str = "") -> tuple[list[int], list[int]]:
    """(ids, mask) for any template: assistant turn i is what render(messages[:i+1]) adds to
    render(messages[:i], add_generation_prompt=True), less the whitespace after its end-of-turn token.

    For ChatML that is content + <|im_end|> without the "\\n" after it: the same tokens `{% generation %}` marks.
    Every prefix must render to a prefix of the full text and tokenise to a prefix of its tokens; a template
    that renders earlier turns differently once later ones exist, or a token that merges across a turn
    boundary, cannot be split this way and is an AlignError.
    """
    where = where or "conversation"
    text = _render(tokenizer, messages, add_generation_prompt=False, where=where)
    ids = _encode(tokenizer, text)
    special = set(tokenizer.all_special_ids)

    def boundary(prefix: list[dict], gen: bool) -> int:
        """Number of tokens of `ids` that render(prefix) accounts for."""
        p = _render(tokenizer, prefix, add_generation_prompt=gen, where=where)
        p_ids = _encode(tokenizer, p) if p else []
        if not text.startswith(p) or ids[:len(p_ids)] != p_ids:
            raise AlignError(f"{where}: the chat template is not prefix-stable (rendering the first {len(prefix)} "
                             "messages does not give the start of the whole conversation, as text or as tokens), "
                             "so the assistant tokens cannot be found; add {% generation %} marks around the "
                             "assistant turns of the template")
        return len(p_ids)

    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        start, end = boundary(messages[:i], True), boundary(messages[:i + 1], False)
        # The separator after the end-of-turn token (ChatML's "\n") belongs to the scaffolding.
        while end > start and ids[end - 1] not in special and not tokenizer.decode([ids[end - 1]]).strip():
            end -= 1
        mask[start:end] = [1] * (end - start)
    return ids, mask


def last_runs(mask: list[int], k: int) -> list[int]:
    """The mask with only its last k runs of 1s kept (one run per assistant turn)."""
    out, runs = list(mask), 0
    for i in range(len(out) - 1, -1, -1):
        if out[i] and (i == len(out) - 1 or not mask[i + 1]):
            runs += 1
        if runs > k:
            out[i] = 0
    return out


def truncate(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut to max_length around the first assistant token s: the prompt (ids[:s]) loses its start, the
    response (ids[s:], the first assistant turn and all after it) loses its end.

    Rule: the prompt keeps min(P, max(max_length - R, max_length // 2)) tokens (P, R: prompt and response
    lengths) and the response the rest. So a short prompt is kept whole, a short response is kept whole,
    and when both are long each gets half (the response the odd token). The response always keeps at least
    its first token, which is an assistant token, so the mask is never emptied.
    """
    if len(ids) <= max_length:
        return ids, mask
    s = mask.index(1)
    p, r = s, len(ids) - s
    keep_p = min(p, max(max_length - r, max_length // 2))
    keep_r = max_length - keep_p
    return ids[s - keep_p:s + keep_r], mask[s - keep_p:s + keep_r]


def encode_chat(tokenizer: Any, messages: list[dict], *, max_length: int, where: str = "",
                completion_turns: int = 0) -> Encoded:
    """Render, mask and truncate one conversation (see `truncate` for the rule); `where` (file:line) names
    the record in errors. EmptyMaskError for a conversation with no assistant turn or an empty one.

    completion_turns=k > 0 (preference data: a prompt that may hold earlier assistant turns, then the
    completion): only the last k assistant turns are labelled, so truncation keeps the completion's start
    and cuts the conversation before it."""
    where = where or "conversation"
    if max_length < 1:
        raise AlignError(f"{where}: max_length must be at least 1, got {max_length}")
    for k, m in enumerate(messages):
        if m.get("role") == "assistant" and not str(m.get("content") or "").strip():
            raise EmptyMaskError(f"{where}: assistant message {k} is empty; there is nothing to train on there; "
                                 "remove the turn or the record")
    if has_generation_marks(tokenizer):
        try:
            ids, mask = assistant_mask_from_template(tokenizer, messages)
        except Exception as e:  # jinja's TemplateError, or raise_exception() inside the template
            raise AlignError(f"{where}: the chat template refused it: {e}") from None
    else:
        ids, mask = assistant_mask_by_prefixes(tokenizer, messages, where)
    if not any(mask):
        raise EmptyMaskError(f"{where}: no assistant tokens to train on (no assistant message, or the template "
                             "renders none); give the record an assistant reply")
    if completion_turns > 0:
        mask = last_runs(mask, completion_turns)
    cut_ids, cut_mask = truncate(ids, mask, max_length)
    if not any(cut_mask):  # truncate() keeps an assistant token; checked so that no rule change can slip by
        raise EmptyMaskError(f"{where}: no assistant token left after truncation to max_length={max_length}")
    labels = [t if m else IGNORE for t, m in zip(cut_ids, cut_mask)]
    return Encoded(input_ids=cut_ids, labels=labels, truncated=len(cut_ids) < len(ids))


def stop_ids(tok: Any) -> list[int]:
    """The tokens that end a response: eos and ChatML's end of turn, where the vocabulary has them."""
    return sorted({t for t in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"))
                   if isinstance(t, int) and t >= 0 and t != tok.unk_token_id})


def encode_prompt(tokenizer: Any, messages: list[dict], *, max_length: int) -> list[int]:
    """The conversation so far plus the assistant header, for generation; its last max_length tokens."""
    ids = _encode(tokenizer, _render(tokenizer, messages, add_generation_prompt=True))
    return ids[-max_length:] if max_length > 0 else []
