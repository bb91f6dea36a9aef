"""The task table: name -> file, format, prompt builder, metric, shots, baseline; groups; resolving names to files.

A task is data, not a code branch: adding one whose file is in a known format is one row of TASKS. The
prompt builders (`prompts.BUILDERS`) turn a file's rows into one of four item shapes:

    multiple_choice    {"query", "choices", "gold"}          each choice scored after the query
    schema             {"contexts", "continuation", "gold"}  one continuation scored after each context
    language_modeling  {"context", "continuation"}           right when every continuation token is greedy
    generative         {"prompt", "answer", ...}             the model writes; a metric reads what it wrote

Two prompt conventions live side by side, as in the field: CORE's (DCLM / nanochat: the llm-foundry ICL files,
their shots and delimiters, a seeded shuffle, BOS first, the span after the choices' common token prefix, the
lowest mean per-token loss wins) for the `core.*` tasks, and lm-evaluation-harness / lighteval's (0-shot,
"Question: ...\\nAnswer:", the span after the context, acc and character-normalised acc) for the model-card tasks
(hellaswag, arc_*, piqa, mmlu), the ones SmolLM2's published figures use.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from gristmill.eval import EvalError

Format = Literal["multiple_choice", "schema", "language_modeling", "generative"]
FORMATS: tuple[str, ...] = ("multiple_choice", "schema", "language_modeling", "generative")


@dataclass(frozen=True)
class Task:
    name: str
    file: str  # relative to a benchmark data folder (../shared/data/benchmarks's layout), or a file's own name
    format: Format
    prompt: str  # a key of prompts.BUILDERS: row -> item
    metric: str  # the headline: acc | acc_norm | acc_mean | greedy | exact_match | ifeval | win_rate
    shots: int = 0
    delimiter: str = " "  # between a query (context) and its continuation
    fewshot_sep: str = "\n\n"  # after each few-shot example
    baseline: float | None = None  # random baseline (fraction); None: mean 1 / choices for multiple choice, else 0
    core: bool = False  # CORE's conventions: seeded shuffle, BOS first, common-prefix span, mean-loss argmin
    stratify: str | None = None  # an item field a limit spreads over (MMLU: subject)
    about: str = ""


def _core(name: str, file: str, fmt: Format, shots: int, delim: str, baseline_pct: float) -> Task:
    """A row of DCLM's CORE table (FORMATS.md §3): llm-foundry ICL file, shots, delimiter, random baseline."""
    prompt = {"multiple_choice": "core_mc", "schema": "core_schema", "language_modeling": "core_lm"}[fmt]
    metric = "greedy" if fmt == "language_modeling" else "acc_mean"
    return Task(f"core.{name}", f"core_icl/{file}", fmt, prompt, metric, shots=shots, delimiter=delim,
                fewshot_sep="\n", baseline=baseline_pct / 100, core=True, about=f"CORE {name}, {shots}-shot")


ANSWER = "\nAnswer: "
TASKS: dict[str, Task] = {t.name: t for t in (
    # The model-card tasks, in lighteval's format for SmolLM2 (0-shot, acc_norm with the leading space not counted)
    Task("hellaswag", "original/hellaswag_val_klosax.jsonl", "multiple_choice", "hellaswag", "acc_norm",
         baseline=0.25, about="HellaSwag validation (10,042), text version: activity label + context"),
    Task("arc_easy", "core_icl/world_knowledge/arc_easy.jsonl", "multiple_choice", "arc", "acc_norm",
         baseline=0.25, about="ARC-Easy test (2,376), 'Question: ...\\nAnswer:'"),
    Task("arc_challenge", "core_icl/world_knowledge/arc_challenge.jsonl", "multiple_choice", "arc", "acc_norm",
         baseline=0.25, about="ARC-Challenge test (1,172), 'Question: ...\\nAnswer:'"),
    Task("piqa", "original/piqa_valid_labeled.jsonl", "multiple_choice", "piqa", "acc_norm", baseline=0.5,
         about="PIQA validation (1,838), 'Question: goal\\nAnswer:'"),
    Task("mmlu", "original/mmlu_test.jsonl", "multiple_choice", "mmlu_cloze", "acc_norm", baseline=0.25, stratify="subject",
         about="MMLU test (14,042), cloze: the answer text scored, averaged over the 57 subjects"),
    Task("lambada", "original/lambada_openai_test.jsonl", "language_modeling", "lambada", "greedy",
         about="LAMBADA (OpenAI's test, 5,153): the last word greedy, and its log-likelihood"),
    # Generative and chat tasks
    Task("gsm8k", "original/gsm8k_test.jsonl", "generative", "gsm8k", "exact_match", shots=5,
         about="GSM8K test (1,319), 5-shot from the other test problems; the number after ####, else the last one"),
    Task("ifeval", "original/ifeval_input_data.jsonl", "generative", "ifeval", "ifeval",
         about="IFEval (541 prompts): prompt- and instruction-level, strict and loose"),
    Task("alpaca_eval", "original/alpaca_eval_davinci003_reference.jsonl", "generative", "alpaca", "win_rate",
         baseline=0.5, about="AlpacaEval (805 prompts) judged by a reward model against text-davinci-003's answers"),
    # CORE (DCLM / nanochat): the 22 low-variance tasks, the ones whose files are at hand
    _core("hellaswag_zeroshot", "language_understanding/hellaswag.jsonl", "multiple_choice", 0, " ", 25),
    _core("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10, ANSWER, 0),
    _core("bigbench_qa_wikidata", "world_knowledge/bigbench_qa_wikidata.jsonl", "language_modeling", 10, " ", 0),
    _core("arc_easy", "world_knowledge/arc_easy.jsonl", "multiple_choice", 10, ANSWER, 25),
    _core("arc_challenge", "world_knowledge/arc_challenge.jsonl", "multiple_choice", 10, ANSWER, 25),
    _core("copa", "commonsense_reasoning/copa.jsonl", "multiple_choice", 0, " ", 50),
    _core("commonsense_qa", "commonsense_reasoning/commonsense_qa.jsonl", "multiple_choice", 10, " ", 40.3),
    _core("piqa", "commonsense_reasoning/piqa.jsonl", "multiple_choice", 10, ANSWER, 50),
    _core("openbook_qa", "commonsense_reasoning/openbook_qa.jsonl", "multiple_choice", 0, " ", 25),
    _core("lambada_openai", "language_understanding/lambada_openai.jsonl", "language_modeling", 0, " ", 0),
    _core("hellaswag", "language_understanding/hellaswag.jsonl", "multiple_choice", 10, " ", 25),
    _core("winograd", "language_understanding/winograd_wsc.jsonl", "schema", 0, " ", 50),
    _core("winogrande", "language_understanding/winogrande.jsonl", "schema", 0, " ", 50),
    _core("bigbench_dyck_languages", "symbolic_problem_solving/bigbench_dyck_languages.jsonl",
          "language_modeling", 10, " ", 0),
    _core("agi_eval_lsat_ar", "symbolic_problem_solving/agi_eval_lsat_ar.jsonl", "multiple_choice", 3, " ", 25),
    _core("bigbench_cs_algorithms", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl",
          "language_modeling", 10, " ", 0),
    _core("bigbench_operators", "symbolic_problem_solving/bigbench_operators.jsonl", "language_modeling", 10, " ", 0),
    _core("bigbench_repeat_copy_logic", "symbolic_problem_solving/bigbench_repeat_copy_logic.jsonl",
          "language_modeling", 10, " ", 0),
    _core("squad", "reading_comprehension/squad.jsonl", "language_modeling", 10, " ", 0),
    _core("coqa", "reading_comprehension/coqa.jsonl", "language_modeling", 0, " ", 0),
    _core("boolq", "reading_comprehension/boolq.jsonl", "multiple_choice", 10, ANSWER, 62),
    _core("bigbench_language_identification", "language_understanding/bigbench_language_identification.jsonl",
          "multiple_choice", 10, " ", 25),
)}

GROUPS: dict[str, tuple[str, ...]] = {
    "core": tuple(n for n in TASKS if n.startswith("core.")),
    "smollm2": ("hellaswag", "arc_easy", "arc_challenge", "piqa", "mmlu"),  # the model cards' table
    "mmlu": ("mmlu",),
    "chat": ("gsm8k", "ifeval", "alpaca_eval"),
}
GROUP_OPTIONAL = {"core"}  # a group whose tasks may be missing from the data folder (CORE's files are large)

# Per format: the prompt builder and headline metric of a user's own task file (`FILE:FORMAT`)
USER_TASK: dict[str, tuple[str, str]] = {"multiple_choice": ("core_mc", "acc"), "schema": ("core_schema", "acc"),
                                         "language_modeling": ("core_lm", "greedy"),
                                         "generative": ("generative", "exact_match")}


def describe() -> str:
    """The known tasks and groups, for `gristmill eval --list` and unknown-name errors."""
    lines = ["groups: " + ", ".join(f"{g} ({len(ts)})" for g, ts in GROUPS.items()), "tasks:"]
    lines += [f"  {t.name:<34} {t.format:<18} {t.metric:<11} {t.about}" for t in TASKS.values()]
    lines.append("  FILE:FORMAT                        a task file of your own given with --data; FORMAT is one of "
                 + ", ".join(FORMATS))
    return "\n".join(lines)


@dataclass(frozen=True)
class Resolved:
    task: Task
    path: Path  # the file read


def resolve(names: list[str], data: list[Path]) -> tuple[list[Resolved], list[str]]:
    """(tasks with their files, names of optional group members whose files are not in `data`).

    `data`: the stage's --data inputs: benchmark data folders (../shared/data/benchmarks's layout) and/or files.
    A built-in task's file is looked up under each folder, then among the files by its trailing path; a
    user's `FILE:FORMAT` names one of the files (by name or trailing path)."""
    out: dict[str, Resolved] = {}
    missing: list[str] = []
    for raw in names:
        if raw in GROUPS:
            for member in GROUPS[raw]:
                path = _find(TASKS[member].file, data)
                if path is None:
                    if raw not in GROUP_OPTIONAL:
                        raise _no_file(TASKS[member], data, group=raw)
                    missing.append(member)
                    continue
                out.setdefault(member, Resolved(TASKS[member], path))
        elif raw in TASKS:
            path = _find(TASKS[raw].file, data)
            if path is None:
                raise _no_file(TASKS[raw], data)
            out.setdefault(raw, Resolved(TASKS[raw], path))
        elif ":" in raw and raw.rsplit(":", 1)[1] in FORMATS:
            file, fmt = raw.rsplit(":", 1)
            path = _find(file, data, user=True)
            if path is None:
                given = ", ".join(str(p) for p in data) or "none"
                raise EvalError(f"eval.tasks: {raw!r} names the file {file!r}, which is not among the --data inputs "
                                f"({given}); give it: --data {file}")
            prompt, metric = USER_TASK[fmt]
            out.setdefault(raw, Resolved(Task(raw, file, fmt, prompt, metric, about=f"{path.name}, {fmt}"), path))
        else:
            hint = (f"; a file of your own needs its format: {raw}:multiple_choice (or :schema, :language_modeling, "
                    ":generative)" if raw.endswith((".jsonl", ".json")) else "")
            raise EvalError(f"eval.tasks: unknown task {raw!r}{hint}\n{describe()}")
    if not out:
        raise EvalError(f"eval.tasks={names}: none of these tasks' files is in the --data inputs "
                        f"({', '.join(map(str, data)) or 'none given'}); give the benchmark data folder, "
                        "e.g. --data ../shared/data/benchmarks")
    return list(out.values()), missing


def _find(rel: str, data: list[Path], *, user: bool = False) -> Path | None:
    for d in data:
        if d.is_dir() and (d / rel).is_file():
            return d / rel
    for d in data:
        if d.is_file() and (d.as_posix().endswith("/" + rel) or d.as_posix() == rel or (user and d.name == rel)):
            return d
    return None


def _no_file(task: Task, data: list[Path], group: str | None = None) -> EvalError:
    what = f"task {task.name!r}" + (f" (group {group!r})" if group else "")
    return EvalError(f"{what} reads {task.file}, which is in none of the --data inputs "
                     f"({', '.join(map(str, data)) or 'none given'}); give the benchmark data folder that holds it, "
                     "e.g. --data ../shared/data/benchmarks")


def core_baselines(meta_csv: Path) -> dict[str, float]:
    """Random baselines (fractions) by CORE label from DCLM's eval_meta_data.csv, to check the table against."""
    with open(meta_csv, newline="", encoding="utf-8") as f:
        return {row["Eval Task"]: float(row["Random baseline"]) / 100 for row in csv.DictReader(f)}


def with_shots(task: Task, shots: int | None) -> Task:
    return task if shots is None or shots == task.shots else replace(task, shots=shots)


def split_task_files(specs: list[str]) -> tuple[list[str], list[Path]]:
    """`--tasks core,my/dir/qa.jsonl:multiple_choice` -> (["core", "qa.jsonl:multiple_choice"], [my/dir/qa.jsonl]):
    a task file named by its path becomes a --data input (hashed and recorded like any input) and the task is
    named by the file's name, so the config (and the stage id) does not depend on where the file lies."""
    names, files = [], []
    for raw in (s.strip() for s in specs):
        if not raw:
            continue
        if ":" in raw and raw.rsplit(":", 1)[1] in FORMATS:
            file, fmt = raw.rsplit(":", 1)
            p = Path(file).expanduser()
            if p.is_file():
                files.append(p)
                raw = f"{p.name}:{fmt}"
            elif "/" in file:
                raise EvalError(f"--tasks {raw}: {file} does not exist")
        names.append(raw)
    return names, files
