"""Task files -> items -> prompts: the prompt builders, few-shot draws (CORE's rule), and the strings each format scores."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gristmill.align.answers import parse_check
from gristmill.eval import EvalError
from gristmill.eval.tasks import Task


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise EvalError(f"{where}: missing field(s) {', '.join(missing)}; this task's rows need {', '.join(keys)}")


def _mc(query: str, choices: list, gold: Any, where: str) -> dict:
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise EvalError(f"{where}: 'choices' must be a list of two or more strings, got {choices!r}")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise EvalError(f"{where}: 'gold' must be an index into the {len(choices)} choices, got {gold!r}")
    if not isinstance(query, str):
        raise EvalError(f"{where}: the query must be a string, got {query!r}")
    return {"query": query, "choices": choices, "gold": gold}


def core_mc(row: dict, where: str) -> dict:
    _need(row, ("query", "choices", "gold"), where)
    return _mc(row["query"], row["choices"], row["gold"], where)


def core_schema(row: dict, where: str) -> dict:
    _need(row, ("context_options", "continuation", "gold"), where)
    opts = row["context_options"]
    _mc("", opts, row["gold"], where)
    if not isinstance(row["continuation"], str):
        raise EvalError(f"{where}: 'continuation' must be a string")
    return {"contexts": opts, "continuation": row["continuation"], "gold": row["gold"]}


def core_lm(row: dict, where: str) -> dict:
    _need(row, ("context", "continuation"), where)
    if not isinstance(row["context"], str) or not isinstance(row["continuation"], str) or not row["continuation"]:
        raise EvalError(f"{where}: 'context' and 'continuation' must be strings, the continuation non-empty")
    return {"context": row["context"], "continuation": row["continuation"]}


def arc(row: dict, where: str) -> dict:  # llm-foundry's rows already start "Question: "
    item = core_mc(row, where)
    return item | {"query": item["query"] + "\nAnswer:"}


def piqa(row: dict, where: str) -> dict:
    _need(row, ("goal", "sol1", "sol2", "label"), where)
    return _mc(f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], row["label"], where)


def hellaswag(row: dict, where: str) -> dict:
    _need(row, ("query", "endings", "label"), where)
    return _mc(row["query"], row["endings"], row["label"], where)


def mmlu_cloze(row: dict, where: str) -> dict:
    _need(row, ("subject", "question", "A", "B", "C", "D", "answer"), where)
    if row["answer"] not in ("A", "B", "C", "D"):
        raise EvalError(f"{where}: 'answer' must be A, B, C or D, got {row['answer']!r}")
    subject = str(row["subject"]).replace("_", " ")
    query = f"The following are questions about {subject}.\nQuestion: {row['question']}\nAnswer:"
    return _mc(query, [row[k] for k in "ABCD"], "ABCD".index(row["answer"]), where) | {"subject": row["subject"]}


def lambada(row: dict, where: str) -> dict:
    _need(row, ("text",), where)
    context, _, word = str(row["text"]).rpartition(" ")
    if not context or not word:
        raise EvalError(f"{where}: 'text' needs at least two words (the target is the last one)")
    return {"context": context, "continuation": word}  # the delimiter " " goes between


def gsm8k(row: dict, where: str) -> dict:
    _need(row, ("question", "answer"), where)
    target = gsm8k_target(row["answer"])
    if target is None:
        raise EvalError(f"{where}: the answer has no '#### <number>' line")
    return {"prompt": row["question"], "answer": target, "solution": row["answer"]}


def ifeval(row: dict, where: str) -> dict:
    _need(row, ("key", "prompt", "instruction_id_list", "kwargs"), where)
    if len(row["instruction_id_list"]) != len(row["kwargs"]):
        raise EvalError(f"{where}: instruction_id_list and kwargs differ in length")
    return {"prompt": row["prompt"], "answer": None, "key": row["key"],
            "instruction_ids": row["instruction_id_list"], "kwargs": row["kwargs"]}


def alpaca(row: dict, where: str) -> dict:
    _need(row, ("instruction", "output"), where)
    return {"prompt": row["instruction"], "answer": None, "reference": row["output"]}


def generative(row: dict, where: str) -> dict:
    """A user's generative task: {prompt or messages, answer?, task?, check?, wrong_answers?, max_chars?}; an answer is
    checked by the row's check rule (align.answers: by default the whole output or a whole word of it)."""
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "user":
            raise EvalError(f"{where}: 'messages' must be a list of turns ending with a user turn")
        prompt: Any = msgs
    else:
        _need(row, ("prompt",), where)
        prompt = row["prompt"]
    answer = None if row.get("answer") is None else str(row["answer"])
    try:
        check = parse_check(row, answer)
    except ValueError as e:
        raise EvalError(f"{where}: {e}") from None
    return {"prompt": prompt, "answer": answer, "task": row.get("task"), "check": check}


BUILDERS: dict[str, Callable[[dict, str], dict]] = {f.__name__: f for f in (
    core_mc, core_schema, core_lm, arc, piqa, hellaswag, mmlu_cloze, lambada, gsm8k, ifeval, alpaca, generative)}


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class Item:
    index: int  # row number in the file (0-based, blank lines not counted)
    data: dict  # the builder's item


def read_items(task: Task, path: Path) -> list[Item]:
    """Every row of the task's file through its prompt builder; a malformed row names the file and line."""
    build = BUILDERS[task.prompt]
    items: list[Item] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 inside a string is no line end
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: cannot read the task file of {task.name!r}: {e}") from None
    n = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno} (task {task.name})"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise EvalError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        items.append(Item(n, build(row, where)))
        n += 1
    if not items:
        raise EvalError(f"{path}: the task file of {task.name!r} has no rows")
    return items


def order(task: Task, items: list[Item], limit: int) -> list[Item]:
    """The examples evaluated, in order: CORE tasks shuffled with random.Random(1337) first (nanochat), so a
    limit takes a random subset; the others in file order (lm-evaluation-harness's --limit). A task with
    `stratify` (MMLU's subject) under a limit takes its examples round-robin over the field's values in file
    order, so a limited MMLU still covers every subject (lighteval limits each subject task on its own)."""
    items = list(items)
    if task.core:
        random.Random(1337).shuffle(items)
    if not limit or limit >= len(items):
        return items
    if task.stratify:
        strata: dict[object, list[Item]] = {}
        for x in items:
            strata.setdefault(x.data.get(task.stratify), []).append(x)
        picked: list[Item] = []
        for rank in range(max(len(v) for v in strata.values())):
            picked += [v[rank] for v in strata.values() if rank < len(v)]
        keep = {id(x) for x in picked[:limit]}
        return [x for x in items if id(x) in keep]
    return items[:limit]


def fewshot(pool: list[Item], i: int, k: int, seed: int) -> list[Item]:
    """CORE's rule: example i's k shots are random.Random(seed + i).sample of the pool without example i."""
    if k == 0:
        return []
    others = [x for j, x in enumerate(pool) if j != i]
    if k > len(others):
        raise EvalError(f"{k} shots asked but the task has only {len(others)} other examples; lower eval.shots")
    return random.Random(seed + i).sample(others, k)


def own_text(task: Task, item: dict) -> str:
    """The example's own text for samples.jsonl (few-shot blocks left out: the `shots` indices name them)."""
    if task.format == "multiple_choice":
        return item["query"]
    if task.format == "schema":
        return " | ".join(item["contexts"])
    if task.format == "language_modeling":
        return item["context"]
    p = item["prompt"]
    return p if isinstance(p, str) else p[-1]["content"]


# ---------------------------------------------------------------------------------------------
# the strings each format scores


@dataclass
class Scorable:
    contexts: list[str]  # per candidate (multiple choice: the same one repeated)
    continuations: list[str]  # per candidate, starting with the delimiter
    choice_chars: list[int]  # characters of each choice without the delimiter (acc_norm's denominator)
    gold: int


def scorable(task: Task, item: dict, shots: list[dict]) -> Scorable:
    """The context and continuation strings of one item, few-shot examples first (CORE's blocks: the shot's
    query, delimiter, gold answer, separator)."""
    d, sep = task.delimiter, task.fewshot_sep
    if task.format == "multiple_choice":
        pre = "".join(s["query"] + d + s["choices"][s["gold"]] + sep for s in shots)
        n = len(item["choices"])
        return Scorable([pre + item["query"]] * n, [d + c for c in item["choices"]],
                        [len(c) for c in item["choices"]], item["gold"])
    if task.format == "schema":
        pre = "".join(s["contexts"][s["gold"]] + d + s["continuation"] + sep for s in shots)
        n = len(item["contexts"])
        return Scorable([pre + c for c in item["contexts"]], [d + item["continuation"]] * n,
                        [len(item["continuation"])] * n, item["gold"])
    if task.format == "language_modeling":
        strip = (lambda s: s.strip()) if task.core else (lambda s: s)  # CORE strips LM contexts
        pre = "".join(strip(s["context"]) + d + s["continuation"] + sep for s in shots)
        return Scorable([pre + strip(item["context"])], [d + item["continuation"]], [len(item["continuation"])], 0)
    raise EvalError(f"task {task.name!r} is generative: it has no continuations to score")


# ---------------------------------------------------------------------------------------------
# generative prompts


def generation_prompt(task: Task, item: dict, shots: list[dict], *, chat: bool) -> str | list[dict]:
    """Plain text (base models) or chat messages (eval.chat: the model's template renders them)."""
    if task.prompt == "gsm8k":
        if chat:
            msgs: list[dict] = []
            for s in shots:
                msgs += [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["solution"]}]
            return msgs + [{"role": "user", "content": item["prompt"]}]
        return "".join(f"Question: {s['prompt']}\nAnswer: {s['solution']}\n\n" for s in shots) + \
            f"Question: {item['prompt']}\nAnswer:"
    prompt = item["prompt"]
    if isinstance(prompt, list):
        return prompt if chat else "\n".join(m["content"] for m in prompt)
    return [{"role": "user", "content": prompt}] if chat else prompt


STOPS = {"gsm8k": ("\n\nQuestion:", "Question:", "\n\n\n")}  # plain-text generation ends at the next few-shot block

_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def _clean_number(s: str) -> str:
    s = s.replace(",", "").rstrip(".")
    return s[:-2] if s.endswith(".0") else s  # "18.0" and "18" are one answer


def gsm8k_target(solution: str) -> str | None:
    """The reference number: what follows '####' in a GSM8K solution."""
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)", solution)
    return _clean_number(m.group(1)) if m else None


def gsm8k_extract(output: str) -> tuple[str | None, str | None]:
    """(strict, flexible) answers of a generation: the number after '####' (the format the shots teach), and
    the last number anywhere (what lm-evaluation-harness's flexible-extract takes)."""
    strict = gsm8k_target(output)
    nums = _NUMBER.findall(output)
    flexible = _clean_number(nums[-1]) if nums else None
    return strict, flexible
