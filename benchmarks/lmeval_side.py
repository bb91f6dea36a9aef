"""lm-evaluation-harness's side of benchmarks/bench_eval.py: local JSONL benchmark tasks, 0-shot, its `hf` model on CPU, one JSON line out.

Run by the benchmark venv's python (lm-eval is installed there only, never a gristmill dependency):

    .venv-bench/bin/python benchmarks/lmeval_side.py --model runs/smollm2-135m-instruct \
        [--tasks arc_easy,arc_challenge,piqa,hellaswag,mmlu,lambada] [--data ../shared/data/benchmarks] \
        [--limit 200] [--batch-size 16]

Offline: lm-eval's built-in tasks read their datasets from the Hugging Face Hub, so every task here is an
inline config (a dict passed to simple_evaluate) whose dataset is the local JSONL file (`dataset_path: json`,
`dataset_kwargs: {data_files: ...}`, the datasets library's packaged json builder) and whose doc_to_text /
doc_to_choice / doc_to_target are Python callables on the raw row (no jinja, no dataset.map pass over the
whole file), with the same prompts as gristmill's eval stage:
  arc_easy / arc_challenge   core_icl/world_knowledge/arc_*.jsonl: query + "\\nAnswer:" | choices | gold
  piqa       original/piqa_valid_labeled.jsonl: "Question: " + goal + "\\nAnswer:" | [sol1, sol2] | label
  hellaswag  original/hellaswag_val_klosax.jsonl: query | endings | label
  mmlu       original/mmlu_test.jsonl (cloze): "The following are questions about <subject>.\\nQuestion: " +
             question + "\\nAnswer:" | [A, B, C, D] | "ABCD".index(answer)
  lambada    original/lambada_openai_test.jsonl: text up to its last space | " " + last word (loglikelihood:
             acc = every target token is the greedy one; perplexity = exp(-mean loglik))
Multiple choice: target_delimiter " ", acc and acc_norm (lm-eval divides each choice's loglik by the
character length of the choice, without the delimiter). --limit N scores the first N rows of each file,
in file order; --indices FILE scores the rows a JSON file names per task instead. Prints {"tasks": {name:
{"acc", "acc_norm", "n", ...}}, "wall_s", "cpu_s", "load_s", "samples": {name: [[loglik per choice] per
example, in file order]}, "doc_ids": {name: [row index per example]}, "context_sha1": {name: [first 12 hex
of the context's sha1 per example]}} as the last stdout line; wall_s / cpu_s are simple_evaluate's (model
loading included), load_s is the imports before it.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: every file is local
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

T0_WALL, T0_CPU = time.perf_counter(), time.process_time()
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "benchmarks"
TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "mmlu", "lambada")
FILES = {
    "arc_easy": "core_icl/world_knowledge/arc_easy.jsonl",
    "arc_challenge": "core_icl/world_knowledge/arc_challenge.jsonl",
    "piqa": "original/piqa_valid_labeled.jsonl",
    "hellaswag": "original/hellaswag_val_klosax.jsonl",
    "mmlu": "original/mmlu_test.jsonl",
    "lambada": "original/lambada_openai_test.jsonl",
}


def arc(doc: dict) -> dict:
    return {"context": doc["query"] + "\nAnswer:", "choices": list(doc["choices"]), "gold": int(doc["gold"])}


def piqa(doc: dict) -> dict:
    return {"context": "Question: " + doc["goal"] + "\nAnswer:", "choices": [doc["sol1"], doc["sol2"]],
            "gold": int(doc["label"])}


def hellaswag(doc: dict) -> dict:
    return {"context": doc["query"], "choices": list(doc["endings"]), "gold": int(doc["label"])}


def mmlu(doc: dict) -> dict:
    subject = doc["subject"].replace("_", " ")
    return {"context": f"The following are questions about {subject}.\nQuestion: {doc['question']}\nAnswer:",
            "choices": [doc["A"], doc["B"], doc["C"], doc["D"]], "gold": "ABCD".index(doc["answer"].strip())}


def lambada(doc: dict) -> dict:
    context, word = doc["text"].rsplit(" ", 1)
    return {"context": context, "target": " " + word}


ROW = {"arc_easy": arc, "arc_challenge": arc, "piqa": piqa, "hellaswag": hellaswag, "mmlu": mmlu, "lambada": lambada}


def field(name: str, key: str):
    """A doc_to_* callable of one task: the raw JSONL row -> its prompt part `key` (no dataset.map pass)."""
    row = ROW[name]

    def get(doc: dict):
        return row(doc)[key]

    get.__name__ = f"{name}_{key}"
    return get


def task_config(name: str, data: Path) -> dict:
    """The inline lm-eval task config of one task (same keys as a task YAML)."""
    path = data / FILES[name]
    if not path.is_file():
        raise SystemExit(f"error: {name}: no such file {path}; pass --data")
    cfg = {
        "task": f"gm_{name}",  # not a built-in task name: nothing of lm-eval's own registry is reused
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "doc_to_text": field(name, "context"),
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }
    if name == "lambada":
        return cfg | {
            "output_type": "loglikelihood",
            "doc_to_target": field(name, "target"),
            "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    return cfg | {
        "output_type": "multiple_choice",
        "doc_to_choice": field(name, "choices"),
        "doc_to_target": field(name, "gold"),
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }


def logliks(sample: dict) -> list[float]:
    """The loglik of each choice (lambada: of its one target) of one logged sample, in choice order."""
    return [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in sample["resps"]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a Hugging Face model folder (config, safetensors, tokenizer)")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="benchmark data root (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="score the first N rows of each task's file")
    ap.add_argument("--indices", type=Path, default=None,
                    help="a JSON file {task: [row index, ...]}: score exactly these rows of each task's file (lm-eval's "
                         "`samples`; instead of --limit, e.g. the subject-stratified MMLU subset gristmill's limit takes)")
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size (requests per forward)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in ROW]
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if not args.model.is_dir():
        raise SystemExit(f"error: --model {args.model}: not a folder")

    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.indices is not None:
        raise SystemExit("error: give --limit or --indices, not both")
    indices = None
    if args.indices is not None:
        picked = json.loads(args.indices.read_text(encoding="utf-8"))
        missing = [n for n in names if n not in picked]
        if missing:
            raise SystemExit(f"error: --indices {args.indices} has no rows for {missing}")
        indices = {f"gm_{n}": [int(i) for i in picked[n]] for n in names}
    configs = [task_config(n, args.data) for n in names]
    load_s = time.perf_counter() - T0_WALL
    w0, c0 = time.perf_counter(), time.process_time()
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(args.model.resolve()), "dtype": "float32"},
        tasks=configs, task_manager=TaskManager(include_defaults=False) if _has_include_defaults() else None,
        num_fewshot=0, batch_size=args.batch_size, device="cpu", limit=args.limit, samples=indices, log_samples=True,
        bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tasks, samples, doc_ids, ctx_sha = {}, {}, {}, {}
    for name in names:
        key = f"gm_{name}"
        res = out["results"][key]
        got = {"n": len(out["samples"][key])}
        for metric in ("acc", "acc_norm", "perplexity"):
            if f"{metric},none" in res:
                got[metric] = res[f"{metric},none"]
        tasks[name] = got
        rows = sorted(out["samples"][key], key=lambda s: s["doc_id"])
        samples[name] = [logliks(s) for s in rows]
        doc_ids[name] = [int(s["doc_id"]) for s in rows]
        # the context each example was scored after (a fingerprint: bench_eval.py checks that both sides read the same rows)
        ctx_sha[name] = [hashlib.sha1(s["arguments"][0][0].encode("utf-8")).hexdigest()[:12] for s in rows]
        if name == "lambada":
            tasks[name]["greedy"] = [bool(s["resps"][0][0][1]) if isinstance(s["resps"][0][0], (list, tuple))
                                     else bool(s["resps"][0][1]) for s in rows]
    print(json.dumps({
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else _version("lm-eval"),
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "limit": args.limit,
        "tasks": tasks, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "load_s": round(load_s, 3),
        "process_cpu_s": round(time.process_time() - T0_CPU, 3), "samples": samples, "doc_ids": doc_ids,
        "context_sha1": ctx_sha,
    }))
    sys.stdout.flush()


def _has_include_defaults() -> bool:
    """Whether this lm-eval's TaskManager can skip indexing its ~200 built-in task folders."""
    import inspect

    from lm_eval.tasks import TaskManager

    return "include_defaults" in inspect.signature(TaskManager.__init__).parameters


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


if __name__ == "__main__":
    main()
