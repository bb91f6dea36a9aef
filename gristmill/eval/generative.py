"""Generative tasks: greedy answers (plain text with stop strings, or the chat template), then GSM8K's number, IFEval's checkers, a checked answer or a reward model's verdict."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from gristmill.align.chat import pad_id
from gristmill.align.generate import left_pad
from gristmill.eval import EvalError
from gristmill.eval.prompts import STOPS, Item, fewshot, generation_prompt, gsm8k_extract, order, own_text
from gristmill.eval.tasks import Task


@torch.no_grad()
def generate_text(model: Any, tok: Any, prompts: list[str], *, max_new_tokens: int, max_length: int,
                  device: torch.device, batch_size: int, stops: tuple[str, ...] = ()) -> list[str]:
    """Greedy continuations of plain-text prompts (left-padded batches; the prompt's last max_length - max_new_tokens
    tokens), each cut at the first stop string: a base model has no end-of-turn to stop at."""
    pad = pad_id(tok)
    keep = max(max_length - max_new_tokens, 1)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad([tok(p, add_special_tokens=False)["input_ids"][-keep:] for p in prompts[i:i + batch_size]],
                             pad)
        width = ids.shape[1]
        kw = {"stop_strings": list(stops), "tokenizer": tok} if stops else {}
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tok.eos_token_id, **kw)
        texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
        out += [_cut(t, stops) for t in texts]
    return out


def _cut(text: str, stops: tuple[str, ...]) -> str:
    at = min((text.find(s) for s in stops if s in text), default=len(text))
    return text[:at].strip()


def run_generative(model: Any, tok: Any, task: Task, items: list[Item], chosen: list[Item], config: Any, window: int,
                   device: torch.device, *, reward: Path | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Answers to the chosen examples, each judged by the task's metric; (results.json entry, samples rows)."""
    from gristmill.eval.metrics import task_result
    from gristmill.eval.progress import Progress

    if task.metric == "win_rate" and reward is None:
        raise EvalError(f"task {task.name} is judged by a reward model: give one with --reward REWARD_DIR (a reward "
                        "stage folder), or leave the task out")
    pool = order(task, items, 0)
    pos = {id(x): j for j, x in enumerate(pool)}
    prompts = [generation_prompt(task, it.data, [x.data for x in fewshot(pool, pos[id(it)], task.shots, config.seed)],
                                 chat=config.chat) for it in chosen]
    if config.chat and not getattr(tok, "chat_template", None):
        raise EvalError("eval.chat = true but the model's tokenizer has no chat template; evaluate it with "
                        "--set eval.chat=false (plain-text prompts)")
    if not config.chat and any(isinstance(p, list) for p in prompts):
        raise EvalError(f"task {task.name}: chat messages need eval.chat = true")
    from gristmill.align.generate import generate

    bar = Progress(task.name, len(prompts))
    answers: list[str] = []
    step = config.batch_size
    for i in range(0, len(prompts), step):
        chunk = prompts[i:i + step]
        if config.chat:
            answers += generate(model, tok, chunk, max_new_tokens=config.max_new_tokens, max_length=window,
                                device=device, batch_size=step)
        else:
            answers += generate_text(model, tok, chunk, max_new_tokens=config.max_new_tokens, max_length=window,
                                     device=device, batch_size=step, stops=STOPS.get(task.prompt, ()))
        bar.update(len(chunk))
    bar.close()

    judge = {"gsm8k": _gsm8k, "ifeval": _ifeval, "alpaca": None, "generative": _checked}.get(task.prompt, _checked)
    if judge is None:
        per, rows, extra = _judged(tok, task, chosen, answers, config, window, device, reward)
    else:
        per, rows, extra = [], [], {}
        for it, answer in zip(chosen, answers):
            verdict, row = judge(it.data, answer)
            per.append(verdict)
            rows.append({"task": task.name, "index": it.index, "prompt": own_text(task, it.data), "output": answer,
                         "correct": bool(verdict[task.metric]), **row})
    res = task_result(task, per, baseline=task.baseline or 0.0, extra=extra)
    if task.prompt == "ifeval":
        res |= _ifeval_levels(rows, res)
    return res, rows


def _ifeval_levels(rows: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    """IFEval's instruction-level accuracies are over all instructions (a prompt with three counts three times),
    not a mean of per-prompt means; the headline is the mean of prompt-level and instruction-level strict
    accuracy (SmolLM2's "Average prompt/inst"), its stderr from the prompt-level one (the larger)."""
    from gristmill.eval.metrics import interval

    inst = {k: [x for r in rows for x in r[k]] for k in ("inst_strict", "inst_loose")}
    levels = {f"{k}_level": sum(v) / len(v) for k, v in inst.items() if v}
    value = (res["metrics"]["prompt_strict"] + levels["inst_strict_level"]) / 2
    return {"value": value, "ci95": interval(value, res["stderr"]), "metrics": res["metrics"] | levels | {"ifeval": value},
            "centered": value, "instructions": len(inst["inst_strict"])}


def _gsm8k(item: dict, answer: str) -> tuple[dict[str, float], dict[str, Any]]:
    strict, flexible = gsm8k_extract(answer)
    return ({"exact_match": float(flexible == item["answer"]), "exact_match_strict": float(strict == item["answer"])},
            {"answer": item["answer"], "extracted": flexible, "extracted_strict": strict})


def _ifeval(item: dict, answer: str) -> tuple[dict[str, float], dict[str, Any]]:
    from gristmill.eval.ifeval import score

    s = score(item["instruction_ids"], item["kwargs"], answer, prompt=item["prompt"])
    # per prompt; _ifeval_levels turns the instruction lists into instruction-level accuracies over all of them
    inst = sum(s["inst_strict"]) / len(s["inst_strict"])
    inst_loose = sum(s["inst_loose"]) / len(s["inst_loose"])
    return ({"ifeval": (float(s["prompt_strict"]) + inst) / 2, "prompt_strict": float(s["prompt_strict"]),
             "prompt_loose": float(s["prompt_loose"]), "inst_strict": inst, "inst_loose": inst_loose},
            {"key": item["key"], "instructions": item["instruction_ids"], "inst_strict": s["inst_strict"],
             "inst_loose": s["inst_loose"]})


def _checked(item: dict, answer: str) -> tuple[dict[str, float], dict[str, Any]]:
    """A user's (or the demo's) generative task: the answer checked by the row's own check rule (align.answers: by
    default the whole output or a whole word of it); a row without an answer is an error."""
    from gristmill.align.answers import answer_correct
    from gristmill.align.judge import HeldOutPrompt

    if item["answer"] is None:
        raise EvalError("a generative task of your own needs an 'answer' in every row to be checked")
    msgs = item["prompt"] if isinstance(item["prompt"], list) else [{"role": "user", "content": item["prompt"]}]
    ok = answer_correct(HeldOutPrompt(msgs, item["answer"], item.get("task"), item.get("check")), answer)
    return {"exact_match": float(ok)}, {"answer": item["answer"], "kind": item.get("task")}


def _judged(tok: Any, task: Task, chosen: list[Item], answers: list[str], config: Any, window: int,
            device: torch.device, reward: Path) -> tuple[list[dict[str, float]], list[dict[str, Any]], dict[str, Any]]:
    """AlpacaEval by a reward model: each answer against the file's reference answer, by the align stages' rule
    (judge.pair_outcome: identical texts tie by equality, scores closer than eval.tie_tolerance tie, ties count
    half), with its Wilson interval; the same rate over the answers that are no longer (in the model's tokens)
    than the reference, so a win bought with length shows as such."""
    from gristmill.align.chat import pad_id
    from gristmill.align.models import load_reward_model, load_tokenizer, model_dir
    from gristmill.align.rewards import model_rewards
    from gristmill.align.scoring import SequenceScorer

    folder = model_dir(reward)
    rtok = load_tokenizer(folder)
    scorer = SequenceScorer(load_reward_model(folder, pad=pad_id(rtok), seed=0).to(device).eval())
    msgs = [[{"role": "user", "content": it.data["prompt"]}] for it in chosen]
    refs = [it.data["reference"] for it in chosen]
    max_len = window
    print(f"[eval] {task.name}: judging {len(chosen)} answers with {folder}", file=sys.stderr)
    scores = model_rewards(scorer, rtok, msgs, [[r, a] for r, a in zip(refs, answers)], max_length=max_len,
                           device=device, batch_size=config.batch_size)
    from gristmill.align.judge import pair_outcome, win_rate

    per, rows, not_longer = [], [], []
    for it, ref, ans, (s_ref, s_ans) in zip(chosen, refs, answers, scores):
        win = pair_outcome(ref.strip(), ans.strip(), s_ref, s_ans, tolerance=config.tie_tolerance)
        shorter = len(tok(ans)["input_ids"]) <= len(tok(ref)["input_ids"])
        per.append({"win_rate": win})
        if shorter:
            not_longer.append(win)
        rows.append({"task": task.name, "index": it.index, "prompt": it.data["prompt"], "output": ans,
                     "reference": ref, "reward": s_ans, "reward_reference": s_ref, "win": win, "correct": win > 0.5,
                     "not_longer": shorter})
    rate, ci = win_rate([p["win_rate"] for p in per])
    rate_short, ci_short = win_rate(not_longer)
    return per, rows, {"win_rate_ci": ci, "ties": sum(1 for p in per if p["win_rate"] == 0.5),
                       "win_rate_not_longer": rate_short, "win_rate_not_longer_ci": ci_short,
                       "answers_not_longer": len(not_longer), "judge": folder.name}
