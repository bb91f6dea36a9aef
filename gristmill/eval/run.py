"""run_eval: the eval stage: a model folder and task files -> results.json, samples.jsonl, report.md with a plot, a card, the manifest."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from gristmill.config import to_dict
from gristmill.eval import EvalError
from gristmill.eval.config import EvalConfig
from gristmill.eval.progress import Progress
from gristmill.eval.prompts import Item, fewshot, order, own_text, read_items, scorable
from gristmill.eval.tasks import Task, resolve, with_shots
from gristmill.manifests import Manifest, begin_stage, sha256_file

LOGLIK = ("multiple_choice", "schema", "language_modeling")


def run_eval(config: EvalConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False) -> Manifest:
    """Evaluate the model `inputs["model"][0]` (a stage folder with model/, or a Hugging Face folder) on
    `config.tasks`, reading task files from `inputs["data"]`; `inputs["reward"]` judges alpaca_eval."""
    import torch

    from gristmill.align.models import model_dir
    from gristmill.stages import spec

    out = Path(out_dir)
    data = [Path(p) for p in inputs.get("data", [])]
    tasks, missing = resolve(config.tasks, data)  # an unknown task or a missing file stops before anything is written
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    st = begin_stage("eval", to_dict(config), inputs, out, expect=spec("eval").expect, force=force,
                     device=device.type)
    if st.done:
        print(f"[eval] {out}: finished (id {st.done.id}); skipping", file=sys.stderr)
        return st.done
    m = st.manifest
    folder = model_dir(inputs["model"][0])
    model, tok = _load(folder, device, config.dtype)
    window = config.max_length or int(getattr(model.config, "max_position_embeddings", 2048) or 2048)

    results: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for r in tasks:
        task = with_shots(r.task, config.shots.get(r.task.name))
        items = read_items(task, r.path)
        chosen = order(task, items, config.limit_for(task.name))
        t0 = time.perf_counter()
        if task.format in LOGLIK:
            res, rows = _loglik_task(model, tok, task, items, chosen, config, window, device)
        else:
            from gristmill.eval.generative import run_generative

            res, rows = run_generative(model, tok, task, items, chosen, config, window, device,
                                       reward=inputs.get("reward", [None])[0])
        timings[task.name] = round(time.perf_counter() - t0, 3)
        res |= {"file": _portable(r.path, data), "sha256": sha256_file(r.path), "examples_in_file": len(items),
                "shots": task.shots, "format": task.format}
        results[task.name] = res
        samples += rows
        print(f"[eval] {task.name}: {task.metric} {res['value']:.4f} ± {res['stderr']:.4f} (n={res['n']}) "
              f"in {timings[task.name]:.1f} s", file=sys.stderr)

    from gristmill.eval.metrics import core_score

    summary = {"model": _model_name(inputs["model"][0], folder), "tasks": results, "core": core_score(results),
               "missing": missing}
    _write_outputs(out, m, summary, samples, timings, config, model_folder=folder)
    return m


def _load(folder: Path, device: Any, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoTokenizer

    from gristmill.align.models import load_causal_lm

    cfg_file = folder / "config.json"
    archs = json.loads(cfg_file.read_text(encoding="utf-8")).get("architectures") or []
    if archs and not any(a.endswith("ForCausalLM") for a in archs):
        raise EvalError(f"{cfg_file}: architecture {', '.join(archs)} is not a causal language model; eval scores "
                        "and generates with *ForCausalLM models (a reward model judges, give it with --reward)")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise EvalError(f"{folder}: cannot load a tokenizer ({e})") from None
    model = load_causal_lm(folder)
    want = torch.bfloat16 if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda") else torch.float32
    return model.to(device=device, dtype=want).eval(), tok


def _loglik_task(model: Any, tok: Any, task: Task, items: list[Item], chosen: list[Item], config: EvalConfig,
                 window: int, device: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every chosen example's candidates, then the verdicts, the task's result and its samples rows."""
    from gristmill.align.chat import pad_id
    from gristmill.eval.loglik import candidates, score_groups, truncate_left
    from gristmill.eval.metrics import choose, task_result

    pool = order(task, items, 0)  # shots are drawn from the whole task (in its order), never the example itself
    pos = {id(x): j for j, x in enumerate(pool)}
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    groups, shapes, truncated = [], [], 0
    for it in chosen:
        shots = fewshot(pool, pos[id(it)], task.shots, config.seed)
        s = scorable(task, it.data, [x.data for x in shots])
        if not s.contexts[0] and bos is None:
            raise EvalError(f"task {task.name}, example {it.index}: empty context and the tokenizer has no BOS / EOS")
        need_bos = task.core or any(not c for c in s.contexts)
        cands = candidates(tok, s, bos=bos if need_bos else None, shared=task.core)
        fitted = [truncate_left(c, window) for c in cands]
        cut = any(was for _, was in fitted)
        fitted = [c for c, _ in fitted]
        truncated += cut
        groups.append(fitted)
        shapes.append((s, [x.index for x in shots], cut))
    bar = Progress(task.name, len(groups))
    scores = score_groups(model, groups, pad_id=pad_id(tok), batch_size=config.batch_size, device=device,
                          progress=bar.update)
    bar.close()

    per_example, rows = [], []
    by_subject: dict[str, list[int]] = {}
    for k, (it, sc, (s, shot_ids, cut)) in enumerate(zip(chosen, scores, shapes)):
        if task.format == "language_modeling":
            verdict = {"greedy": float(sc[0].greedy), "logprob": sc[0].logprob, "tokens": sc[0].tokens}
            per_example.append({"greedy": verdict["greedy"]})
            rows.append({"task": task.name, "index": it.index, "prompt": own_text(task, it.data),
                         "continuation": s.continuations[0], "logliks": [sc[0].logprob], "tokens": [sc[0].tokens],
                         "gold": 0, "greedy": sc[0].greedy, "correct": sc[0].greedy, "shots": shot_ids,
                         "truncated": cut})
            continue
        picks = choose(sc, s.choice_chars)
        per_example.append({k2: float(v == s.gold) for k2, v in picks.items()})
        if "subject" in it.data:
            by_subject.setdefault(it.data["subject"], []).append(k)
        rows.append({"task": task.name, "index": it.index, "prompt": own_text(task, it.data),
                     "choices": s.continuations, "logliks": [x.logprob for x in sc], "tokens": [x.tokens for x in sc],
                     "gold": s.gold, "pred": picks, "correct": picks[task.metric] == s.gold, "shots": shot_ids,
                     "truncated": cut})
    extra: dict[str, Any] = {"truncated": truncated}
    if task.format == "language_modeling":
        nats = sum(r["logliks"][0] for r in rows)
        toks = sum(r["tokens"][0] for r in rows)
        extra |= {"continuation_nats_per_token": -nats / max(toks, 1),
                  "perplexity": math.exp(-sum(r["logliks"][0] for r in rows) / max(len(rows), 1))}
    return task_result(task, per_example, baseline=_baseline(task, chosen), extra=extra,
                       groups=by_subject if len(by_subject) > 1 else None), rows


def _baseline(task: Task, chosen: list[Item]) -> float:
    if task.baseline is not None:
        return task.baseline
    if task.format == "multiple_choice":
        return sum(1 / len(x.data["choices"]) for x in chosen) / len(chosen)
    if task.format == "schema":
        return sum(1 / len(x.data["contexts"]) for x in chosen) / len(chosen)
    return 0.0


def _portable(path: Path, data: list[Path]) -> str:
    """A task file named by its place under the --data folder that held it (not a machine's absolute path)."""
    for d in data:
        if d.is_dir():
            try:
                return path.relative_to(d).as_posix()
            except ValueError:
                continue
    return path.name


def _model_name(given: Path, folder: Path) -> str:
    """The evaluated model as a user would name it: the stage and id of a gristmill stage folder, else the HF
    folder's name."""
    from gristmill.manifests import MANIFEST_NAME, read_manifest

    mp = Path(given) / MANIFEST_NAME
    if mp.is_file():
        m = read_manifest(mp)
        return f"{Path(given).name} ({m.stage} {m.id})"
    return folder.name


def _write_outputs(out: Path, m: Manifest, summary: dict[str, Any], samples: list[dict[str, Any]],
                   timings: dict[str, float], config: EvalConfig, *, model_folder: Path) -> None:
    from gristmill.eval.report import write_card, write_plot, write_report
    from gristmill.manifests import atomic_write_text, output_record, write_manifest

    atomic_write_text(out / "results.json", json.dumps(_finite(summary), indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(_finite(r), ensure_ascii=False, sort_keys=True) + "\n"
                                                     for r in samples))
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2, sort_keys=True) + "\n")
    write_plot(out / "results.png", summary)
    card = write_card(out / "card.md", summary, m, model_folder=model_folder)
    write_report(out / "report.md", summary, timings, config)
    m.metrics = {"model": summary["model"], "core": summary["core"], "missing_core_tasks": summary["missing"],
                 "tasks": {k: {f: v.get(f) for f in ("metric", "value", "stderr", "n", "random_baseline", "centered",
                                                      "truncated", "shots", "file", "sha256")}
                           for k, v in summary["tasks"].items()},
                 "time_s": round(sum(timings.values()), 3)}
    m.metrics = _finite(m.metrics)
    det = dict(deterministic=True)
    m.outputs = [output_record(out, "results.json", "metrics", **det),
                 output_record(out, "samples.jsonl", "samples", records=len(samples), **det),
                 output_record(out, "results.png", "plot", **det)]
    if card is not None:
        m.outputs.append(output_record(out, card, "card", **det))
    m.outputs += [output_record(out, "timings.json", "log", deterministic=False),
                  output_record(out, "report.md", "report", deterministic=False)]
    write_manifest(out, m)


def _finite(v: Any) -> Any:
    """NaN / inf (a stderr of one example) become null: JSON has no such numbers."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
