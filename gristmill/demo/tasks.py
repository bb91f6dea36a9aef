"""Alignment data with checkable answers (arithmetic, word reversal, invented facts) and its checker.

Three tasks:

- ``arithmetic``: "What is 7 + 5?" -> "12" (a, b small; +, - with a >= b, *).
- ``reverse``:    "Reverse the letters of the word 'garden'." -> "nedrag".
- ``fact``:       "What is the capital of Velmora?" -> "Ostrik" (the table in ``lexicon.FACTS``;
  the same facts are mentioned in some English web pages of the demo dump).

Answer format understood by :func:`check_answer` (what the SFT responses teach):

- arithmetic: the *last* integer in the response is the answer ("7 + 5 = 12." is right);
- reverse: the *last* word in the response is the answer ("The word 'garden' reversed is
  'nedrag'." is right; letters separated by spaces or dashes are off-format and wrong);
- fact: the answer appears as a whole word and no other answer of the same relation does.

Responses longer than ``MAX_RESPONSE_CHARS`` are wrong whatever they say. Every SFT, preference and prompt record
also says so in generic fields (`check`, `wrong_answers`, `max_chars`: :func:`check_fields`), which is how the
later stages check answers without importing this module.
Held-out (val) instances never appear in any train file: reversal words are split by word; arithmetic
problems and facts are split by phrasing (one phrasing of each held out, one kept for the RL prompts and
preference pairs, three taught by SFT), so that held-out questions test recall of what was taught under
words never seen with it; the facts themselves are meant to be learned from the web dump.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from gristmill.demo import lexicon as lx

TASKS = ("arithmetic", "reverse", "fact")
TASK_WEIGHTS = (0.45, 0.30, 0.25)
VAL_FRACTION = 0.15
MAX_RESPONSE_CHARS = 200

OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}

ARITH_PROMPTS = ["What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "Work out {a} {op} {b}.",
                 "Compute {a} {op} {b} and give the result.", "What do you get from {a} {op} {b}?"]
REVERSE_PROMPTS = ["Reverse the letters of the word '{w}'.", "Write the word '{w}' backwards.",
                   "Spell '{w}' in reverse order.", "What is '{w}' spelled backwards?",
                   "Reverse the word '{w}'."]
REVERSE_WITH_INPUT = "Reverse the letters of the word given in the input."
FACT_PROMPTS = {
    "capital": ["What is the capital of {s}?", "Which city is the capital of {s}?",
                "Name the capital of {s}.", "Tell me the capital city of {s}.",
                "What city serves as the capital of {s}?"],
    "animal": ["What is the national animal of {s}?", "Which animal is the national animal of {s}?",
               "Name the national animal of {s}.", "Tell me the national animal of {s}.",
               "What animal does {s} have as its national animal?"],
    "colour": ["What colour is the {s}?", "Which colour is the {s}?", "Name the colour of the {s}.",
               "Tell me the colour of the {s}.", "What is the colour of the {s}?"],
}

_ARITH_RE = re.compile(r"(\d+)\s*(\+|-|\*|plus|minus|times)\s*(\d+)")


# ---------------------------------------------------------------------------------------------
# Items: one checkable problem each, with a stable key used for the train/val split.
# ---------------------------------------------------------------------------------------------

def arithmetic_items() -> list[dict]:
    """One item per (problem, phrasing): sums and differences of 0..9, products of 0..5."""
    problems = [(a, "+", b) for a in range(10) for b in range(10)]
    problems += [(a, "-", b) for a in range(10) for b in range(a + 1)]
    problems += [(a, "*", b) for a in range(6) for b in range(6)]
    return [{"task": "arithmetic", "a": a, "op": op, "b": b, "phrasing": k, "key": f"{a}{op}{b}#{k}",
             "answer": str(eval_op(a, op, b))} for a, op, b in problems for k in range(len(ARITH_PROMPTS))]


def eval_op(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def reverse_items() -> list[dict]:
    return [{"task": "reverse", "word": w, "key": w, "answer": w[::-1]} for w in lx.english_words()]


def fact_items() -> list[dict]:
    """One item per (fact, phrasing)."""
    return [{"task": "fact", "fact": f, "phrasing": k, "key": f"{f['id']}#{k}", "answer": f["answer"]}
            for f in lx.FACTS for k in range(len(FACT_PROMPTS[f["relation"]]))]


def split_items(rng: random.Random) -> dict[str, dict[str, list[dict]]]:
    """{"sft" | "rl" | "val": {task: items}}, three pools disjoint by item key.

    Arithmetic problems and facts are split by phrasing: of each problem's five phrasings one is held out
    (val), one is kept for the RL prompts and the preference pairs (rl), and SFT is taught the other three.
    Held-out questions thus test recall of what SFT taught under words it never saw with it, not the
    invention of addition (a 1M-parameter model does not learn that from a few hundred examples, and RL
    cannot raise an accuracy that sampling never reaches). The RL stages get questions of that same kind
    (taught facts, unseen words) that are not the held-out ones: trained on the SFT prompts themselves,
    which SFT has memorised, RL has nothing to learn that carries over to new words (measured: GRPO with
    the checker raised train-prompt accuracy 49 % -> 59 % and lowered held-out accuracy 44 % -> 40 %).
    Reversal words are split three ways by word."""
    pools: dict[str, dict[str, list[dict]]] = {"sft": {}, "rl": {}, "val": {}}
    items = reverse_items()
    rng.shuffle(items)
    n = max(1, round(len(items) * VAL_FRACTION))
    pools["val"]["reverse"], pools["rl"]["reverse"], pools["sft"]["reverse"] = items[:n], items[n:2 * n], items[2 * n:]
    for task, items, problem in (("arithmetic", arithmetic_items(), lambda it: (it["a"], it["op"], it["b"])),
                                 ("fact", fact_items(), lambda it: it["fact"]["id"])):
        by_problem: dict = {}
        for it in items:
            by_problem.setdefault(problem(it), []).append(it)
        for pool in pools.values():
            pool[task] = []
        for group in by_problem.values():
            held, rl = rng.sample(range(len(group)), 2)
            for it in group:
                pools["val" if it["phrasing"] == held else "rl" if it["phrasing"] == rl else "sft"][task].append(it)
    return pools


# ---------------------------------------------------------------------------------------------
# Prompts, good responses and bad responses.
# ---------------------------------------------------------------------------------------------

def render_prompt(item: dict, rng: random.Random) -> str:
    if item["task"] == "arithmetic":
        op = item["op"] if rng.random() < 0.7 else OP_WORDS[item["op"]]
        return ARITH_PROMPTS[item["phrasing"]].format(a=item["a"], op=op, b=item["b"])
    if item["task"] == "reverse":
        return rng.choice(REVERSE_PROMPTS).format(w=item["word"])
    f = item["fact"]
    return FACT_PROMPTS[f["relation"]][item["phrasing"]].format(s=f["subject"])


def fact_sentence(fact: dict, answer: str) -> str:
    f = dict(fact, answer=answer)
    return lx.capitalize_first(lx.fact_statement(f)) + "."


def _forms(item: dict, ans: str) -> list[str]:
    """The answer formats the SFT responses teach, each holding `ans` where the checker reads it."""
    if item["task"] == "arithmetic":
        return [f"{item['a']} {item['op']} {item['b']} = {ans}.", f"The answer is {ans}.", ans]
    if item["task"] == "reverse":
        w = item["word"]
        return [f"The word '{w}' reversed is '{ans}'.", f"Reversed, '{w}' becomes '{ans}'.", ans]
    return [fact_sentence(item["fact"], ans), ans]


def taught_form(item: dict, rng: random.Random) -> int:
    """Which of `_forms` SFT answers `item` in, and preference pairs compare it in.

    Arithmetic is always "a op b = c.": restated, the answer follows a context that is the same whatever
    the question's words, so what SFT teaches under one phrasing carries over to the others (with the three
    forms mixed, the demo's SFT model answered 22 % of held-out sums right, sampled; restating every time,
    77 %). Other tasks: any form."""
    return 0 if item["task"] == "arithmetic" else rng.randrange(len(_forms(item, item["answer"])))


def good_response(item: dict, rng: random.Random, form: int | None = None) -> str:
    forms = _forms(item, item["answer"])
    return forms[rng.randrange(len(forms)) if form is None else form]


def wrong_answer(item: dict, rng: random.Random) -> str:
    """A plausible wrong answer: off by a little, the classic slip, a near-miss spelling, another fact."""
    ans = item["answer"]
    if item["task"] == "arithmetic":
        if item["op"] == "*" and rng.random() < 0.5 and item["a"] + item["b"] != int(ans):
            return str(item["a"] + item["b"])  # added instead of multiplied
        d = rng.choice([-3, -2, -1, 1, 2, 3])
        return str(int(ans) + d if int(ans) + d >= 0 else int(ans) - d)
    if item["task"] == "reverse":
        w = item["word"]
        i = rng.randrange(len(ans) - 1)
        candidates = [w, ans[1:], ans[:-1], ans[:i] + ans[i + 1] + ans[i] + ans[i + 2:]]
        return rng.choice([c for c in candidates if c != ans and c])
    f = item["fact"]
    return rng.choice([g["answer"] for g in lx.FACTS if g["relation"] == f["relation"] and g["answer"] != ans])


def random_item(task: str, rng: random.Random) -> dict:
    """A problem of `task` drawn at random (its train/val side does not matter: only its answer is shown)."""
    if task == "arithmetic":
        op = rng.choice("+-*")
        a, b = rng.randrange(13), rng.randrange(13)
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        return {"task": task, "a": a, "op": op, "b": b, "answer": str(eval_op(a, op, b))}
    if task == "reverse":
        w = rng.choice(lx.english_words())
        return {"task": task, "word": w, "answer": w[::-1]}
    f = rng.choice(lx.FACTS)
    return {"task": task, "fact": f, "answer": f["answer"]}


def preference_pair(item: dict, rng: random.Random) -> tuple[str, str]:
    """(chosen, rejected). In 6 pairs of 10 both are in the same format and differ only in the answer, so
    that format tells a reward model nothing and RL cannot win by changing format alone (a bare answer
    preferred over a sentence is the shortcut a 1M-parameter reward model learns first); 2 reject a
    well-formed answer to another task's question (else RL answers every question with the form the
    reward model likes best, "12 + 1 = 11." to "What colour is the bellis moth?"); 2 an off-format
    non-answer. Pairs are in the form SFT answers in (`taught_form`), so the reward model learns to judge
    the answers the policy gives (134 held-out wrong-answer sums in SFT's form: 49 % ranked right by a
    reward model trained on the three forms mixed, 62 % by one trained on SFT's form)."""
    forms = _forms(item, item["answer"])
    form = taught_form(item, rng)
    u = rng.random()
    if u < 0.6:
        return forms[form], _forms(item, wrong_answer(item, rng))[form]
    if u < 0.8:
        other = random_item(rng.choice([t for t in TASKS if t != item["task"]]), rng)
        return forms[form], good_response(other, rng)
    if item["task"] == "arithmetic":
        off = rng.choice(["I am not sure, it is some number or other.",
                          "Numbers are fun! Let me know if you have other questions.",
                          "That depends on how you look at it."])
    elif item["task"] == "reverse":
        off = rng.choice([" ".join(item["answer"]), "-".join(item["answer"]), "Sure, reversing words is easy!"])
    else:
        off = rng.choice(["I do not know.", f"That is an interesting question about {item['fact']['subject']}.",
                          "Nobody can say for certain."])
    return forms[form], off


# ---------------------------------------------------------------------------------------------
# The checker later stages use to score a model's answers.
# ---------------------------------------------------------------------------------------------

def infer_task(prompt: str) -> str | None:
    if re.search(r"\brevers|backwards", prompt, re.I):
        return "reverse"
    if _ARITH_RE.search(prompt):
        return "arithmetic"
    if find_fact(prompt) is not None:
        return "fact"
    return None


def find_fact(prompt: str) -> dict | None:
    relation = ("capital" if "capital" in prompt.lower() else
                "animal" if "animal" in prompt.lower() else "colour")
    for f in lx.FACTS:
        if f["relation"] == relation and f["subject"].lower() in prompt.lower():
            return f
    return None


def _prompt_text(prompt_or_record) -> tuple[str, str]:
    """(prompt text, input text) from a string or a record of any of our three formats."""
    if isinstance(prompt_or_record, str):
        return prompt_or_record, ""
    rec = prompt_or_record
    return rec.get("prompt") or rec.get("instruction") or "", rec.get("input") or ""


def expected_answer(task: str | None, prompt_or_record) -> str:
    """The correct answer for a prompt string or a record ({"answer"} wins when present)."""
    if isinstance(prompt_or_record, dict) and prompt_or_record.get("answer") is not None:
        return str(prompt_or_record["answer"])
    prompt, extra = _prompt_text(prompt_or_record)
    task = task or infer_task(prompt + " " + extra)
    if task == "arithmetic":
        m = _ARITH_RE.search(prompt + " " + extra)
        if not m:
            raise ValueError(f"no arithmetic problem in prompt {prompt!r}")
        op = {"plus": "+", "minus": "-", "times": "*"}.get(m.group(2), m.group(2))
        return str(eval_op(int(m.group(1)), op, int(m.group(3))))
    if task == "reverse":
        m = re.search(r"'([A-Za-z]+)'", prompt)
        word = m.group(1) if m else extra.strip()
        if not word:
            raise ValueError(f"no word to reverse in prompt {prompt!r}")
        return word[::-1]
    if task == "fact":
        f = find_fact(prompt + " " + extra)
        if f is None:
            raise ValueError(f"no known fact in prompt {prompt!r}")
        return f["answer"]
    raise ValueError(f"unknown task {task!r} for prompt {prompt!r}")


def check_answer(task: str | None, prompt_or_record, response: str) -> bool:
    """True when `response` answers the prompt correctly and in the expected format.

    task: "arithmetic", "reverse", "fact", or None to infer it from the prompt.
    prompt_or_record: the prompt string, or a record: {"prompt", "task", "answer"} (prompts
    files), {"instruction", "input"?} (SFT) or {"prompt", ...} (preference).
    """
    if isinstance(prompt_or_record, dict) and task is None:
        task = prompt_or_record.get("task")
    prompt, extra = _prompt_text(prompt_or_record)
    task = task or infer_task(prompt + " " + extra)
    answer = expected_answer(task, prompt_or_record)
    response = (response or "").strip()
    if not response or len(response) > MAX_RESPONSE_CHARS:
        return False
    if task == "arithmetic":
        numbers = re.findall(r"-?\d+", response)
        return bool(numbers) and int(numbers[-1]) == int(answer)
    if task == "reverse":
        words = re.findall(r"[A-Za-z]+", response)
        return bool(words) and words[-1].lower() == answer.lower()
    if task == "fact":
        fact = find_fact(prompt + " " + extra)
        relation = fact["relation"] if fact else None
        others = [f["answer"] for f in lx.FACTS if f["relation"] == relation and f["answer"] != answer]

        def has(word: str) -> bool:
            return re.search(rf"\b{re.escape(word)}\b", response, re.I) is not None
        return has(answer) and not any(has(o) for o in others)
    raise ValueError(f"unknown task {task!r}")


# ---------------------------------------------------------------------------------------------
# Writing the files
# ---------------------------------------------------------------------------------------------

def check_fields(item: dict) -> dict:
    """The record fields that tell any stage how to check an answer to `item` exactly as `check_answer` does,
    without knowing this module: `check` (arithmetic: the last integer; reverse: the last word; fact: the answer as
    a whole word), `wrong_answers` (fact: the other answers of the same relation) and `max_chars`. Drawing no
    random numbers, they leave every other byte of the files as it was."""
    fields: dict = {"check": {"arithmetic": "last_number", "reverse": "last_word", "fact": "word"}[item["task"]]}
    if item["task"] == "fact":
        relation = item["fact"]["relation"]
        fields["wrong_answers"] = [f["answer"] for f in lx.FACTS
                                   if f["relation"] == relation and f["answer"] != item["answer"]]
    return fields | {"max_chars": MAX_RESPONSE_CHARS}


def _draw(pools: dict, queues: dict, rng: random.Random) -> dict:
    """One item of a randomly chosen task. Items come in a shuffled order and are reshuffled when a
    pool runs out, so a small file covers many different items before any repeats."""
    task = rng.choices(TASKS, TASK_WEIGHTS)[0]
    if not queues.get(task):
        queues[task] = list(pools[task])
        rng.shuffle(queues[task])
    return queues[task].pop()


def sft_record(item: dict, rng: random.Random) -> dict:
    """An instruction and a good response in the taught form, with the task, the answer and how to check it
    (`check_fields`) so that SFT can check its generations."""
    check = {"task": item["task"], "answer": item["answer"], **check_fields(item)}
    if item["task"] == "reverse" and rng.random() < 0.3:
        return {"instruction": REVERSE_WITH_INPUT, "input": item["word"], "response": good_response(item, rng)} | check
    prompt = render_prompt(item, rng)
    return {"instruction": prompt, "response": good_response(item, rng, taught_form(item, rng))} | check


def preference_record(item: dict, rng: random.Random) -> dict:
    chosen, rejected = preference_pair(item, rng)
    return {"prompt": render_prompt(item, rng), "chosen": chosen, "rejected": rejected, "task": item["task"],
            "answer": item["answer"], **check_fields(item)}


def prompt_record(item: dict, rng: random.Random) -> dict:
    return {"prompt": render_prompt(item, rng), "task": item["task"], "answer": item["answer"], **check_fields(item)}


def choice_record(item: dict, rng: random.Random) -> dict:
    """A held-out problem as multiple choice for the eval stage (CORE's ICL format): the right answer and three
    plausible wrong ones, each in the taught form ("7 + 5 = 12.", the fact sentence), so a base model that read the
    dump's facts but was never taught to answer can still be scored by the log-likelihood it gives each."""
    wrong: list[str] = []
    for _ in range(50):
        w = wrong_answer(item, rng)
        if w not in wrong and w != item["answer"]:
            wrong.append(w)
        if len(wrong) == 3:
            break
    answers = [item["answer"], *wrong]
    rng.shuffle(answers)
    return {"query": f"Question: {render_prompt(item, rng)}\nAnswer:", "choices": [_forms(item, a)[0] for a in answers],
            "gold": answers.index(item["answer"]), "task": item["task"]}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_task_data(out_dir: Path, pages: int, rng: random.Random) -> dict:
    """sft/, preference/, prompts/ train and val files; sizes scale with `pages`. SFT trains on the "sft"
    pool, the preference pairs and RL prompts on the "rl" pool, and every val file is the "val" pool."""
    pools = split_items(rng)
    # file: (rows for train, rows for val, record maker, pool of its train split)
    sizes = {"sft": (2 * pages, max(20, pages // 4), sft_record, "sft"),
             "preference": (pages, max(20, pages // 4), preference_record, "rl"),
             "prompts": (2 * pages, max(20, pages // 4), prompt_record, "rl")}
    counts = {}
    for name, (n_train, n_val, make, train_pool) in sizes.items():
        for split, pool, n in (("train", pools[train_pool], n_train), ("val", pools["val"], n_val)):
            queues: dict = {}
            rows = [make(_draw(pool, queues, rng), rng) for _ in range(n)]
            _write_jsonl(out_dir / name / f"{split}.jsonl", rows)
            counts[f"{name}/{split}.jsonl"] = n
    # The eval stage's own tasks (drawn last, so the files above do not change): the held-out prompts answered
    # and checked, and the same pool as multiple choice; CORE's format, so any model can be scored on them
    n_eval = max(20, pages // 4)
    for name, make in (("answers", prompt_record), ("choices", choice_record)):
        queues = {}
        _write_jsonl(out_dir / "eval" / f"{name}.jsonl", [make(_draw(pools["val"], queues, rng), rng)
                                                          for _ in range(n_eval)])
        counts[f"eval/{name}.jsonl"] = n_eval
    return counts
