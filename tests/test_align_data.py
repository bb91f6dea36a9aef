"""Alignment data: every SFT / preference / prompt format, HH parsing and its quirks, per-line errors, the eval split."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from gristmill.align import AlignError
from gristmill.align.answers import AnswerCheck
from gristmill.align.data import (DataConfig, PreferencePair, load_preferences, load_prompts, load_sft, parse_hh,
                                  split_eval)
from gristmill.config import ConfigError, build

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ERR, SKIP = DataConfig(), DataConfig(on_error="skip")


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or raw strings (written as they are: broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# SFT formats


def test_alpaca_records_become_exact_messages(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "answer": "5", "task": "arithmetic"},
        {"instruction": "Say hi.", "input": "", "response": "Hi!"},
        {"instruction": "Say hi.", "response": "Hello.", "system": "Be brief."},
    ])
    got = load_sft([f], ERR).records
    assert [e.messages for e in got] == [
        [U("Add the numbers.\n\n2 and 3"), A("5")],
        [U("Say hi."), A("Hi!")],
        [S("Be brief."), U("Say hi."), A("Hello.")],
    ]
    assert [e.source for e in got] == [f"{f}:1", f"{f}:2", f"{f}:3"]
    assert (got[0].answer, got[0].task) == ("5", "arithmetic") and (got[1].answer, got[1].task) == (None, None)
    assert len({e.key for e in got}) == 3 and all(len(e.key) == 64 for e in got)


def test_messages_records_keep_their_turns(tmp_path):
    conv = [S("You are terse."), U("Hi"), A("Hello."), U("2+2?"), A("4")]
    f = write_jsonl(tmp_path / "m.jsonl", [{"messages": conv, "task": "chat"},
                                           {"messages": [{"role": "user", "content": "x", "name": "bob"}, A("y")]}])
    got = load_sft([f], ERR).records
    assert got[0].messages == conv and got[0].task == "chat"
    assert got[1].messages == [U("x"), A("y")]  # extra keys dropped


def test_self_instruct_gives_one_example_per_instance(tmp_path):
    rec = {"id": "seed_task_7", "instruction": "Reverse the word.", "is_classification": False,
           "instances": [{"input": "cat", "output": "tac"}, {"input": "", "output": "(nothing)"}]}
    f = write_jsonl(tmp_path / "s.jsonl", [rec])
    got = load_sft([f], ERR).records
    assert [e.messages for e in got] == [[U("Reverse the word.\n\ncat"), A("tac")],
                                         [U("Reverse the word."), A("(nothing)")]]
    assert [e.source for e in got] == [f"{f}:1#1", f"{f}:1#2"]
    assert got[0].key == got[1].key  # one task, one side of the eval split


@pytest.mark.parametrize("record, problem", [
    ({"messages": [U("hi"), A("yo"), U("and?")]}, "ends with a user turn"),
    ({"messages": [U("hi")]}, "no assistant turn"),
    ({"messages": [U("hi"), A("  ")]}, "messages[1] is an assistant turn with empty content"),
    ({"messages": [U("hi"), {"role": "human", "content": "x"}]}, "messages[1].role is 'human'"),
    ({"messages": [U("hi"), S("late"), A("x")]}, "only the first message"),
    ({"messages": [U("hi"), {"role": "assistant", "content": 3}]}, "messages[1].content must be a string"),
    ({"instruction": "Do it.", "response": ""}, "'response' is empty"),
    ({"instruction": "Do it."}, "no 'response' or 'output'"),
    ({"instruction": 5, "output": "x"}, "'instruction' must be a string"),
    ({"instruction": "Do it.", "output": "x", "answer": [1]}, "'answer' must be a string"),
    ({"text": "just text", "meta": 1}, "keys: meta, text"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_malformed_sft_record_names_file_line_and_problem(tmp_path, record, problem):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "ok", "output": "fine"}, record])
    with pytest.raises(AlignError) as e:
        load_sft([f], ERR, stage="sft")
    msg = str(e.value)
    assert f"{f}:2:" in msg and problem in msg and "--set sft.data.on_error=skip" in msg


def test_unknown_format_lists_the_accepted_ones(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "reply": "r"}])
    with pytest.raises(AlignError, match=r"x.jsonl:1: matches no SFT format \(keys: question, reply\); "
                                         r"accepted: Alpaca .*messages.*self-instruct"):
        load_sft([f], ERR)


def test_invalid_json_and_json_array_locations(tmp_path):
    f = write_jsonl(tmp_path / "broken.jsonl", [{"instruction": "a", "output": "b"}, "", '{"instruction": "a",'])
    with pytest.raises(AlignError, match=r"broken.jsonl:3: not valid JSON"):
        load_sft([f], ERR)
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 7}]))
    with pytest.raises(AlignError, match=r"arr.json:record 2: 'output' must be a string"):
        load_sft([arr], ERR)
    cut = tmp_path / "cut.json"
    cut.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": ')
    with pytest.raises(AlignError, match=r"cut.json: not valid JSON \(line 2"):
        load_sft([cut], SKIP)  # a broken array cannot be skipped record by record


# ------------------------------------------------------------------------------------------------
# Skip mode, empty files, missing files


def test_skip_mode_lists_every_bad_line_and_loads_the_rest(tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "one", "output": "1"},
        "{not json",
        {"messages": [U("hi")]},
        "",
        {"instruction": "two", "output": "2"},
        {"instruction": "t", "instances": [{"input": "", "output": "ok"}, {"input": "", "output": ""}]},
    ])
    got = load_sft([f], SKIP)
    assert [e.messages[-1]["content"] for e in got.records] == ["1", "2", "ok"]
    assert [(s.source, s.reason.split(" (")[0]) for s in got.skipped] == [
        (f"{f}:2", "not valid JSON"),
        (f"{f}:3", "messages has no assistant turn; SFT trains on the assistant's turns"),
        (f"{f}:6#2", "instances[1]: 'output' is empty"),
    ]
    s = got.summary()
    assert (s["records"], s["skipped"], s["degenerate"]) == (3, 3, 0)
    assert s["skipped_lines"][0] == {"source": f"{f}:2", "reason": got.skipped[0].reason}
    assert s["files"] == [{"path": str(f), "records": 3, "skipped": 3, "degenerate": 0,
                           "formats": {"alpaca": 2, "self-instruct": 1}, "stopped_at_max_records": False}]
    json.dumps(s)  # JSON-ready


@pytest.mark.parametrize("cfg", [ERR, SKIP], ids=["error", "skip"])
def test_a_file_with_nothing_usable_is_an_error_in_both_modes(tmp_path, cfg):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(AlignError, match="empty.jsonl: no usable record"):
        load_sft([empty], cfg)
    degenerate_only = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "x"}])
    with pytest.raises(AlignError, match="same.jsonl: no usable record .*1 degenerate"):
        load_preferences([degenerate_only], cfg)
    with pytest.raises(AlignError, match="nope.jsonl: no such file"):
        load_sft([tmp_path / "nope.jsonl"], cfg)


def test_all_bad_lines_in_skip_mode_is_an_error(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", ["{broken", {"foo": 1}])
    with pytest.raises(AlignError, match=r"bad.jsonl: no usable record \(2 malformed, 0 degenerate; first: "
                                         r".*bad.jsonl:1: not valid JSON"):
        load_sft([f], SKIP)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps({"instruction": "a", "output": "b"}, indent=2))
    with pytest.raises(AlignError, match="pretty.json: one JSON object spread over several lines"):
        load_sft([pretty], SKIP)


def test_max_records_reads_a_prefix_of_each_file(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    f1, f2 = write_jsonl(tmp_path / "1.jsonl", rows), write_jsonl(tmp_path / "2.jsonl", ["{oops", *rows[:2]])
    got = load_sft([f1, f2], DataConfig(on_error="skip", max_records=3))
    assert [e.source for e in got.records] == [f"{f1}:1", f"{f1}:2", f"{f1}:3", f"{f2}:2", f"{f2}:3"]
    assert [p["stopped_at_max_records"] for p in got.per_file] == [True, False]


def test_data_config_checks_name_the_field():
    with pytest.raises(ConfigError, match=r"\[sft.data\] eval_fraction=1.0 must be >= 0 and < 1"):
        build(DataConfig, {"eval_fraction": 1.0}, section="sft.data")
    with pytest.raises(ValueError, match="max_records=-1"):
        DataConfig(max_records=-1)
    with pytest.raises(ConfigError, match="on_error"):
        build(DataConfig, {"on_error": "ignore"}, section="sft.data")


# ------------------------------------------------------------------------------------------------
# Compressed files and JSON arrays


def test_gz_zst_and_json_array_files_read_the_same(tmp_path):
    import zstandard

    rows = [{"instruction": "q1", "output": "a1"}, {"messages": [U("q2"), A("a2")]}]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(text))
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))                # an array
    (tmp_path / "lines.json").write_bytes(text)                                 # JSON Lines named .json
    (tmp_path / "d.json.zst").write_bytes(zstandard.ZstdCompressor().compress(json.dumps(rows).encode()))
    want = [[U("q1"), A("a1")], [U("q2"), A("a2")]]
    keys = None
    for name in ("d.jsonl.gz", "d.jsonl.zst", "d.json", "lines.json", "d.json.zst"):
        got = load_sft([tmp_path / name], ERR).records
        assert [e.messages for e in got] == want, name
        keys = keys or [e.key for e in got]
        assert [e.key for e in got] == keys, name  # the key is the record's content, whatever the layout
    assert load_sft([tmp_path / "d.json"], ERR).records[1].source == f"{tmp_path / 'd.json'}:record 2"


def test_truncated_gzip_is_a_file_error(tmp_path):
    data = gzip.compress(("".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n"
                                  for i in range(2000))).encode())
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(AlignError, match="cut.jsonl.gz: cannot read it"):
        load_sft([f], SKIP)


# ------------------------------------------------------------------------------------------------
# Preferences


def test_explicit_prompt_pairs(tmp_path):
    conv_prompt = [S("sys"), U("a"), A("b"), U("c")]
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 2},
        {"prompt": conv_prompt, "chosen": [A("yes")], "rejected": [A("no"), A("really")]},
        # whole conversations next to the prompt: the repeated prompt is removed
        {"prompt": [U("q")], "chosen": [U("q"), A("good")], "rejected": [U("q"), A("bad")]},
    ])
    got = load_preferences([f], ERR).records
    assert got[0] == PreferencePair(prompt=[U("What is 2+2?")], chosen=[A("4")], rejected=[A("5")],
                                    source=f"{f}:1", key=got[0].key, margin=2.0)
    assert (got[1].prompt, got[1].chosen, got[1].rejected, got[1].margin) == (
        conv_prompt, [A("yes")], [A("no"), A("really")], None)
    assert (got[2].prompt, got[2].chosen, got[2].rejected) == ([U("q")], [A("good")], [A("bad")])


@pytest.mark.parametrize("record, problem", [
    ({"prompt": [U("a"), A("b")], "chosen": "x", "rejected": "y"}, "'prompt' ends with an assistant turn"),
    ({"prompt": "", "chosen": "x", "rejected": "y"}, "'prompt' is empty"),
    ({"prompt": "p", "chosen": [U("other"), A("x")], "rejected": "y"}, "chosen has a user turn"),
    ({"prompt": "p", "chosen": "x", "rejected": "y", "margin": "big"}, "'margin' must be a finite number"),
    ({"chosen": "x", "rejected": [A("y")]}, "must both be HH strings or both message lists"),
    ({"chosen": "no markers here", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "text before the first"),
    ({"prompt": "p", "chosen": "x"}, "matches no preference format (keys: chosen, prompt)"),
])
def test_malformed_pairs(tmp_path, record, problem):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "y"}, record])
    with pytest.raises(AlignError) as e:
        load_preferences([f], ERR, stage="reward")
    assert f"{f}:2:" in str(e.value) and problem in str(e.value) and "reward.data.on_error=skip" in str(e.value)


def test_degenerate_pairs_are_reported_never_loaded_and_never_an_error(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": "", "rejected": "bad"},
        {"prompt": "p", "chosen": "good", "rejected": "   "},
        {"prompt": "p", "chosen": [A("x")], "rejected": []},
        {"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: yo"},
        {"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant: yo"},
    ])
    for cfg in (ERR, SKIP):
        got = load_preferences([f], cfg)
        assert [p.source for p in got.records] == [f"{f}:1"] and got.skipped == []
        assert [(d.source, d.reason) for d in got.degenerate] == [
            (f"{f}:2", "degenerate pair: chosen and rejected are the same"),
            (f"{f}:3", "degenerate pair: chosen is empty"),
            (f"{f}:4", "degenerate pair: rejected is empty"),
            (f"{f}:5", "degenerate pair: rejected is empty"),
            (f"{f}:6", "degenerate pair: chosen and rejected are the same"),
            (f"{f}:7", "degenerate pair: chosen is empty"),
        ]
        s = got.summary()
        assert (s["records"], s["skipped"], s["degenerate"]) == (1, 0, 6)
        assert s["degenerate_lines"][1] == {"source": f"{f}:3", "reason": "degenerate pair: chosen is empty"}


# ------------------------------------------------------------------------------------------------
# Anthropic HH


def test_parse_hh_two_turns():
    assert parse_hh("\n\nHuman: What is 2+2?\n\nAssistant: It is 4.") == [U("What is 2+2?"), A("It is 4.")]


def test_hh_two_turn_pair(tmp_path):
    f = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?",
                                             "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."}])
    (p,) = load_preferences([f], ERR).records
    assert (p.prompt, p.chosen, p.rejected) == ([U("Hi there")], [A("Hello! How can I help?")], [A("Go away.")])


def test_hh_multi_turn_pair_prompt_is_the_shared_prefix(tmp_path):
    shared = ("\n\nHuman: I need a recipe.\n\nAssistant: For what dish?\n\nHuman: Pancakes, please."
              "\n\nAssistant: Sure, you need flour.\n\nHuman: And then?")
    f = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": shared + "\n\nAssistant: Mix flour, eggs and milk.",
                                             "rejected": shared + "\n\nAssistant: Figure it out."}])
    (p,) = load_preferences([f], ERR).records
    assert p.prompt == [U("I need a recipe."), A("For what dish?"), U("Pancakes, please."),
                        A("Sure, you need flour."), U("And then?")]
    assert (p.chosen, p.rejected) == ([A("Mix flour, eggs and milk.")], [A("Figure it out.")])
    # the same conversations as message lists (no prompt field) split the same way
    g = write_jsonl(tmp_path / "conv.jsonl", [{"chosen": parse_hh(shared + "\n\nAssistant: Mix flour, eggs and milk."),
                                               "rejected": parse_hh(shared + "\n\nAssistant: Figure it out.")}])
    (q,) = load_preferences([g], ERR).records
    assert (q.prompt, q.chosen, q.rejected) == (p.prompt, p.chosen, p.rejected)
    # prompts from HH records: up to the last Human turn of the chosen conversation
    (r,) = load_prompts([f], ERR).records
    assert r.messages == p.prompt


def test_hh_quirks_of_the_real_data():
    # no leading blank line; "Human:" inside an assistant turn (not after a blank line) is text
    assert parse_hh("Human: hi\n\nAssistant: Human: No, you are wrong.") == [U("hi"), A("Human: No, you are wrong.")]
    # surrounding spaces are stripped; a final "Assistant:" with nothing after it is no turn
    assert parse_hh("\n\nHuman:   hi  \n\nAssistant:  ") == [U("hi")]
    # an empty turn in the middle is dropped and the turns around it, now of one speaker, are joined
    assert parse_hh("\n\nHuman: a\n\nAssistant: \n\nHuman: b\n\nAssistant: c") == [U("a\n\nb"), A("c")]
    # a doubled marker joins into one turn, so the roles alternate
    assert parse_hh("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c") == [U("a"), A("b\n\nc")]
    # a single newline before "Human:" is not a turn boundary
    assert parse_hh("\n\nHuman: a\nHuman: b\n\nAssistant: c") == [U("a\nHuman: b"), A("c")]
    assert parse_hh("") == []
    with pytest.raises(ValueError, match="text before the first"):
        parse_hh("Hello\n\nHuman: a")


def test_hh_unanswered_last_human_turn_is_dropped(tmp_path):
    base = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2"
    f = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": base + "\n\nAssistant: good", "rejected": base + "\n\nAssistant: bad\n\nHuman: more?"},
        # rejected = chosen plus an unanswered Human turn: nothing left to compare
        {"chosen": base + "\n\nAssistant: good", "rejected": base + "\n\nAssistant: good\n\nHuman: more?"},
        # the two differ before the last Human turn: not a pair of replies to one prompt
        {"chosen": "\n\nHuman: q\n\nAssistant: x\n\nHuman: y\n\nAssistant: z",
         "rejected": "\n\nHuman: q\n\nAssistant: X\n\nHuman: Y\n\nAssistant: Z"},
    ])
    got = load_preferences([f], SKIP)
    (p,) = got.records
    assert (p.prompt, p.chosen, p.rejected) == ([U("q1"), A("a1"), U("q2")], [A("good")], [A("bad")])
    assert [d.source for d in got.degenerate] == [f"{f}:2"]
    assert [s.source for s in got.skipped] == [f"{f}:3"]
    assert "differ before their last user (Human) turn" in got.skipped[0].reason


# ------------------------------------------------------------------------------------------------
# Prompts


def test_prompt_records(tmp_path):
    f = write_jsonl(tmp_path / "pr.jsonl", [
        {"prompt": "What is 3 * 4?", "answer": "12", "task": "arithmetic"},
        {"messages": [S("Be brief."), U("Reverse 'cat'.")], "answer": "tac", "task": "reverse"},
        {"prompt": [U("a"), A("b"), U("c")], "answer": 7},
        {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "rejected": "..."},
    ])
    got = load_prompts([f], ERR).records
    assert [(r.messages, r.answer, r.task) for r in got] == [
        ([U("What is 3 * 4?")], "12", "arithmetic"),
        ([S("Be brief."), U("Reverse 'cat'.")], "tac", "reverse"),
        ([U("a"), A("b"), U("c")], "7", None),
        ([U("a"), A("b"), U("c")], None, None),
    ]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [U("q"), A("a")]}])
    with pytest.raises(AlignError, match=r"bad.jsonl:1: 'messages' ends with an assistant turn"):
        load_prompts([bad], ERR, stage="ppo")


# ------------------------------------------------------------------------------------------------
# The eval split


class Rec:
    def __init__(self, key):
        self.key = key


def test_check_fields_are_parsed_into_every_record_kind(tmp_path):
    check = {"check": "word", "wrong_answers": ["Belhaven", "Sennat"], "max_chars": 50}
    sft = write_jsonl(tmp_path / "sft.jsonl", [
        {"instruction": "Capital of Velmora?", "response": "Ostrik.", "answer": "Ostrik", **check},
        {"messages": [U("What is 3 * 4?"), A("12")], "answer": 12, "check": "last_number"},
        {"instruction": "Say hi.", "response": "Hi!"}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Capital of Velmora?", "chosen": "Ostrik.", "rejected": "Sennat.", "answer": "Ostrik", **check}])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "Reverse 'cat'.", "answer": "tac", "check": "last_word"},
        {"prompt": "Say the answer.", "answer": "a b", "check": "exact"},
        {"prompt": "Capital of Velmora?", "answer": "Ostrik", "wrong_answers": ["Sennat"]}])
    fact = AnswerCheck("word", ("Belhaven", "Sennat"), 50)
    assert [e.check for e in load_sft([sft], ERR).records] == [fact, AnswerCheck("last_number"), None]
    assert load_preferences([pairs], ERR).records[0].check == fact
    assert [r.check for r in load_prompts([prompts], ERR).records] == [
        AnswerCheck("last_word"), AnswerCheck("exact"), AnswerCheck("word", ("Sennat",))]


@pytest.mark.parametrize("fields, problem", [
    ({"answer": "5", "check": "number"}, "'check' must be one of 'word', 'exact', 'last_number', 'last_word', got 'number'"),
    ({"answer": "five", "check": "last_number"}, "check 'last_number' needs an integer 'answer', got 'five'"),
    ({"answer": "ab-c", "check": "last_word"}, "check 'last_word' needs an 'answer' of the letters A-Z, a-z only"),
    ({"answer": "5", "wrong_answers": "6"}, "'wrong_answers' must be a list of non-empty strings, got '6'"),
    ({"answer": "5", "wrong_answers": ["6", ""]}, "'wrong_answers' must be a list of non-empty strings"),
    ({"answer": "Ostrik", "wrong_answers": ["ostrik"]}, "'wrong_answers' holds the answer itself ('ostrik')"),
    ({"answer": "5", "max_chars": 0}, "'max_chars' must be a positive integer, got 0"),
    ({"answer": "5", "max_chars": True}, "'max_chars' must be a positive integer, got True"),
    ({"check": "word"}, "'check', 'wrong_answers' and 'max_chars' say how to check an 'answer'; the record has none"),
])
def test_bad_check_fields_name_file_line_and_field(tmp_path, fields, problem):
    for load, rec in ((load_prompts, {"prompt": "q"}), (load_sft, {"instruction": "q", "response": "r"}),
                      (load_preferences, {"prompt": "q", "chosen": "a", "rejected": "b"})):
        f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine", "instruction": "fine", "response": "r",
                                                  "chosen": "a", "rejected": "b"}, rec | fields])
        with pytest.raises(AlignError) as e:
            load([f], ERR)
        assert f"bad.jsonl:2: {problem}" in str(e.value), (load.__name__, str(e.value))


def test_split_eval_is_stable_as_the_file_grows():
    recs = [Rec(f"record-{i}") for i in range(200)]
    train, held = split_eval(recs, 0.1)
    assert len(train) + len(held) == 200 and held and train
    train2, held2 = split_eval(recs + [Rec(f"new-{i}") for i in range(300)], 0.1)
    old_held = {r.key for r in held}
    assert {r.key for r in held2 if r.key.startswith("record-")} == old_held
    assert {r.key for r in train2 if r.key.startswith("record-")} == {r.key for r in train}
    assert [r.key for r in held] == sorted(old_held, key=lambda k: int(k.split("-")[1]))  # input order kept


def test_split_eval_fraction_and_edges():
    recs = [Rec(f"{i:x}") for i in range(1000)]
    train, held = split_eval(recs, 0.2)
    assert 150 <= len(held) <= 250 and len(train) + len(held) == 1000
    assert split_eval(recs, 0.0) == (recs, [])
    two = [Rec("a"), Rec("b")]
    tr, ev = split_eval(two, 0.01)
    assert len(tr) == 1 and len(ev) == 1  # one held out even when the fraction picks none
    one = [Rec(k) for k in "abcdefgh"]
    assert all(split_eval(one[i:i + 1], 0.99) == (one[i:i + 1], []) for i in range(8))  # a lone record trains


def test_split_eval_by_record_content(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(300)]
    first = load_sft([write_jsonl(tmp_path / "a.jsonl", rows)], ERR).records
    more = load_sft([write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)) + [{"instruction": "z", "output": "z"}])],
                    ERR).records
    held = {e.messages[0]["content"] for e in split_eval(first, 0.1)[1]}
    held_more = {e.messages[0]["content"] for e in split_eval(more, 0.1)[1]}
    assert held and held_more - {"z"} == held  # same records held out, whatever the file order


# ------------------------------------------------------------------------------------------------
# The demo's task data and the real data in ../shared/data


def test_demo_task_data_loads_with_answers(tmp_path):
    from gristmill.demo.tasks import write_task_data

    write_task_data(tmp_path, 40, random.Random("test"))
    for split in ("train", "val"):
        sft = load_sft([tmp_path / "sft" / f"{split}.jsonl"], ERR)
        pairs = load_preferences([tmp_path / "preference" / f"{split}.jsonl"], ERR)
        prompts = load_prompts([tmp_path / "prompts" / f"{split}.jsonl"], ERR)
        for loaded, path in ((sft, "sft"), (pairs, "preference"), (prompts, "prompts")):
            n_lines = len((tmp_path / path / f"{split}.jsonl").read_text().splitlines())
            assert len(loaded.records) + len(loaded.degenerate) == n_lines and loaded.skipped == []
        raw = [json.loads(x) for x in (tmp_path / "prompts" / f"{split}.jsonl").read_text().splitlines()]
        assert [(r.answer, r.task) for r in prompts.records] == [(x["answer"], x["task"]) for x in raw]
        assert all(r.answer for r in prompts.records)
        assert [r.check.rule for r in prompts.records] == [x["check"] for x in raw]  # how each is checked, as data


HH_FILES = sorted((SHARED / "preference" / "hh-rlhf").glob("*/test.jsonl.gz"))
SFT_FILES = sorted((SHARED / "sft").glob("*.json*"))


@pytest.mark.skipif(not HH_FILES, reason="../shared/data/preference/hh-rlhf not present")
def test_real_hh_files_load_without_malformed_records():
    got = load_preferences(HH_FILES, ERR)
    n_lines = sum(1 for f in HH_FILES for _ in gzip.open(f, "rt"))
    assert got.skipped == [] and len(got.records) + len(got.degenerate) == n_lines
    assert len(got.degenerate) < 0.01 * n_lines
    for p in got.records:
        roles = [m["role"] for m in p.prompt]
        assert roles[0] == "user" and roles[-1] == "user" and all(a != b for a, b in zip(roles, roles[1:])), p.source
        assert [m["role"] for m in p.chosen] == ["assistant"] == [m["role"] for m in p.rejected], p.source
        assert all(m["content"].strip() for m in p.prompt + p.chosen + p.rejected), p.source
    prompts = load_prompts(HH_FILES, ERR)
    assert len(prompts.records) == n_lines and all(r.messages[-1]["role"] == "user" for r in prompts.records)


@pytest.mark.skipif(not SFT_FILES, reason="../shared/data/sft not present")
def test_real_sft_files_load_without_malformed_records():
    got = load_sft(SFT_FILES, ERR)
    assert got.skipped == [] and len(got.records) > 1000
    assert all(e.messages[-1]["role"] == "assistant" and e.messages[-1]["content"].strip() for e in got.records)
