"""Chat rendering: labels exactly on assistant turns (end-of-turn included), template vs prefix masks, truncation."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from gristmill.align import AlignError
from gristmill.align.chat import (IGNORE, EmptyMaskError, assistant_mask_by_prefixes, assistant_mask_from_template,
                                  check_template, encode_chat, encode_prompt, template_info)
from gristmill.tokenize.train import CHATML_TEMPLATE, EOS, PAD, save_folder, train_tokenizer

WORDS = ("the mill grinds grain into flour while farmers carry sacks along dusty roads near old stone bridges "
         "prices rose 3.5% in 2024 what is seven plus five answer twelve reverse the word stone enots").split()
EXTRAS = ["naïve café", "日本語", "🙂 ok", "a, b; c!", "x = 1 + 2", "tab\there", "line\nbreak", "two\n\nlines",
          "  spaced", "trailing \n", "?"]

# SmolLM2-Instruct style: ChatML without {% generation %}, and a default system message when none is given.
DEFAULT_SYSTEM = "You are a helpful assistant."
NO_MARKS_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + " " + rng.choice(EXTRAS)
            for _ in range(400)] + ["\n\n\n" + w for w in WORDS] * 5  # so that "\n\n" is a token


def make_tokenizer(folder: Path, template: str | None, pad: str | None = PAD):
    from transformers import AutoTokenizer

    save_folder(folder, train_tokenizer(texts(), vocab_size=400), eos_token=EOS, pad_token=pad, chat_template=template)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("chatml"), CHATML_TEMPLATE)


@pytest.fixture(scope="module")
def no_marks(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("nomarks"), NO_MARKS_TEMPLATE)


def conversation(rng: random.Random, turns: int | None = None, system: bool | None = None) -> list[dict]:
    def text() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.4:
            words.insert(rng.randint(0, len(words)), rng.choice(EXTRAS))
        return " ".join(words)

    msgs = [{"role": "system", "content": text()}] if (rng.random() < 0.5 if system is None else system) else []
    for _ in range(turns or rng.randint(1, 4)):
        msgs += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
    return msgs


def test_two_turn_chatml_labels_token_by_token(chatml):
    msgs = [{"role": "system", "content": "you answer in one word"},
            {"role": "user", "content": "what is seven plus five"},
            {"role": "assistant", "content": "twelve"},
            {"role": "user", "content": "reverse the word stone"},
            {"role": "assistant", "content": "enots, the reverse"}]
    # Independent construction: each piece tokenised on its own (every cut is at a special token or "\n").
    enc = lambda s: chatml.encode(s, add_special_tokens=False)  # noqa: E731
    want_ids, want_labels = [], []
    for m in msgs:
        head, body, sep = enc(f"<|im_start|>{m['role']}\n"), enc(m["content"] + "<|im_end|>"), enc("\n")
        want_ids += head + body + sep
        want_labels += [IGNORE] * len(head) + (body if m["role"] == "assistant" else [IGNORE] * len(body)) \
            + [IGNORE] * len(sep)
    e = encode_chat(chatml, msgs, max_length=1000)
    assert e.input_ids == want_ids and e.labels == want_labels and not e.truncated
    # The supervised tokens, read back: exactly the two replies, each with its end-of-turn token.
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    runs, cur = [], []
    for t, l in zip(e.input_ids, e.labels):
        if l != IGNORE:
            assert l == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    assert [chatml.decode(r) for r in runs] == ["twelve<|im_end|>", "enots, the reverse<|im_end|>"]
    assert all(r[-1] == im_end for r in runs)


def test_template_mask_and_prefix_mask_agree(chatml):
    rng = random.Random(1)
    for _ in range(150):
        msgs = conversation(rng)
        ids_t, mask_t = assistant_mask_from_template(chatml, msgs)
        ids_p, mask_p = assistant_mask_by_prefixes(chatml, msgs)
        assert ids_p == ids_t and mask_p == mask_t, msgs
        assert sum(mask_t) > 0


def test_template_without_generation_marks_works_by_prefixes(chatml, no_marks):
    assert template_info(chatml)["has_generation_marks"] and not template_info(no_marks)["has_generation_marks"]
    with pytest.raises(AlignError, match="generation"):
        assistant_mask_from_template(no_marks, [{"role": "user", "content": "hi"}])
    rng = random.Random(2)
    for _ in range(60):
        msgs = conversation(rng)
        got = encode_chat(no_marks, msgs, max_length=10_000)
        # The same conversation with the default system message written out, through the marked template.
        full = msgs if msgs[0]["role"] == "system" else [{"role": "system", "content": DEFAULT_SYSTEM}] + msgs
        want = encode_chat(chatml, full, max_length=10_000)
        assert got == want


def test_template_that_is_not_prefix_stable_is_refused(tmp_path, chatml):
    # The header counts the messages, so rendering a prefix does not give the start of the whole.
    counting = "{{- 'turns: ' + (messages | length | string) + '\\n' }}" + NO_MARKS_TEMPLATE
    tok = make_tokenizer(tmp_path / "counting", counting)
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "the mill"}]
    with pytest.raises(AlignError, match="not prefix-stable"):
        encode_chat(tok, msgs, max_length=100, where="data.jsonl:7")
    # A reply starting with blank lines: "\n" + "\n\n" merge across the header / reply boundary.
    nl = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "\n\nthe mill"}]
    assert len(chatml.encode("\n\n", add_special_tokens=False)) == 1
    with pytest.raises(AlignError, match="data.jsonl:8: .*not prefix-stable"):
        assistant_mask_by_prefixes(chatml, nl, where="data.jsonl:8")


def test_empty_assistant_turn_or_no_assistant_is_refused(chatml, no_marks):
    for tok in (chatml, no_marks):
        for msgs in ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  \n"}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": "and"}, {"role": "assistant", "content": ""}],
                     [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]):
            with pytest.raises(EmptyMaskError, match="train.jsonl:12"):
                encode_chat(tok, msgs, max_length=100, where="train.jsonl:12")


def test_truncation_keeps_prompt_end_and_response_start(chatml):
    rng = random.Random(3)
    enc = lambda s: chatml.encode(s, add_special_tokens=False)  # noqa: E731

    def case(n_prompt_words: int, n_reply_words: int):
        user = " ".join(rng.choice(WORDS) for _ in range(n_prompt_words))
        reply = " ".join(rng.choice(WORDS) for _ in range(n_reply_words))
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        prompt = enc(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
        response = enc(reply + "<|im_end|>") + enc("\n")
        return msgs, prompt, response

    for n_p, n_r, max_length, keep_p in [(40, 40, 31, 15),    # both long: half each (the response the odd one)
                                         (2, 60, 40, None),    # short prompt: kept whole
                                         (60, 1, 30, None),    # short response: kept whole
                                         (40, 40, 1, 0),       # one token left: the reply's first
                                         (40, 40, 2, 1)]:
        msgs, prompt, response = case(n_p, n_r)
        assert len(prompt) + len(response) > max_length
        if keep_p is None:
            keep_p = len(prompt) if n_p == 2 else max_length - len(response)
        keep_r = max_length - keep_p
        e = encode_chat(chatml, msgs, max_length=max_length)
        assert e.truncated and len(e.input_ids) == max_length
        assert e.input_ids == prompt[len(prompt) - keep_p:] + response[:keep_r]
        assert e.labels[:keep_p] == [IGNORE] * keep_p
        # The reply and its <|im_end|> are trained; the "\n" after it is not.
        assert e.labels[keep_p:] == [t if i < len(response) - 1 else IGNORE for i, t in enumerate(response[:keep_r])]
        assert any(l != IGNORE for l in e.labels)
    # Fits exactly: nothing cut.
    msgs, prompt, response = case(5, 5)
    assert not encode_chat(chatml, msgs, max_length=len(prompt) + len(response)).truncated


def test_truncation_never_empties_the_mask(chatml):
    rng = random.Random(4)
    for _ in range(40):
        msgs = conversation(rng)
        full = encode_chat(chatml, msgs, max_length=10_000)
        for max_length in (1, 2, 3, rng.randint(1, len(full.input_ids))):
            e = encode_chat(chatml, msgs, max_length=max_length)
            assert len(e.input_ids) == min(max_length, len(full.input_ids))
            assert any(l != IGNORE for l in e.labels)
            # A contiguous window of the full example, labels and all.
            n = len(e.input_ids)
            starts = [s for s in range(len(full.input_ids) - n + 1) if full.input_ids[s:s + n] == e.input_ids
                      and full.labels[s:s + n] == e.labels]
            assert starts


def test_encode_prompt_ends_with_the_assistant_header(chatml, no_marks):
    msgs = [{"role": "user", "content": "what is seven plus five"}]
    header = chatml.encode("<|im_start|>assistant\n", add_special_tokens=False)
    ids = encode_prompt(chatml, msgs, max_length=100)
    assert ids == chatml.encode("<|im_start|>user\nwhat is seven plus five<|im_end|>\n<|im_start|>assistant\n",
                                add_special_tokens=False)
    assert encode_prompt(chatml, msgs, max_length=5) == ids[-5:] and ids[-len(header):] == header
    assert chatml.decode(encode_prompt(no_marks, msgs, max_length=100)).startswith(
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")


def test_template_info_and_checks(tmp_path, chatml, no_marks):
    a, b = template_info(chatml), template_info(no_marks)
    assert a["chat_template_sha256"] != b["chat_template_sha256"]
    assert (a["eos_token"], a["eos_token_id"], a["pad_token"], a["pad_token_id"]) == (EOS, 0, PAD, 1)
    assert a == template_info(make_tokenizer(tmp_path / "again", CHATML_TEMPLATE))  # stable across loads
    assert template_info(make_tokenizer(tmp_path / "nopad", CHATML_TEMPLATE, pad=None))["pad_token_id"] is None
    check_template(chatml, "model/")
    with pytest.raises(AlignError, match="base/: the tokenizer has no chat_template"):
        check_template(make_tokenizer(tmp_path / "plain", None), "base/")
    nopad = make_tokenizer(tmp_path / "nopad2", CHATML_TEMPLATE, pad=None)
    check_template(nopad, "x")  # eos pads
    nopad.eos_token = None
    with pytest.raises(AlignError, match="pad token nor an eos"):
        check_template(nopad, "x")
