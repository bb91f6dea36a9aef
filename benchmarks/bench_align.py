"""Align throughput and memory: gristmill's sft / reward / dpo / ppo stages vs TRL's SFTTrainer / RewardTrainer / DPOTrainer / GRPOTrainer / PPOTrainer, same model, data, batch, length, precision.

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

Every mode's summary also gives whole-run wall and CPU time, ours / TRL, median (min-max) over rounds: CPU is
the run's process and the processes it waited for (getrusage RUSAGE_CHILDREN, user + system), which other load
on a shared machine moves far less than wall time; for grpo / ppo our bare-generate measurement is left out.

grpo / ppo (not run by default: --modes grpo ppo): seconds per iteration of the RL stage (`gristmill align ppo`,
advantage grpo with K samples per prompt, or gae with one and a value model) against TRL's GRPOTrainer (TRL in
.venv-bench) and PPOTrainer (trl.experimental.ppo, last shipped in TRL 1.12.0, so in its own venv .venv-bench-ppo;
without it our ppo side runs alone). Both sides: the policy --policy (an sft folder; TRL gets its merged model/),
the reward model --reward-model (a reward folder; TRL gets its model/ as an AutoModelForSequenceClassification),
the same HH prompts in the same iterations (read by our loader: the conversation up to the last Human turn, the
first distinct ones of at most --max-prompt-tokens, so neither side truncates; TRL reads them in the order our stage
visits them, unshuffled), LoRA r 16 / alpha 32 on every linear layer, sampling at --temperature with top-p 1 and
top-k 0 up to --max-new-tokens, KL coefficient, clip 0.2, lr (constant), fp32, threads. One of our iterations is
P = --prompts-per-iteration prompts x K samples (grpo --samples; ppo 1) = S responses and --ppo-epochs passes over
them in minibatches of M = --minibatch (default S): S / M x epochs optimizer updates. TRL GRPO: per_device_train_
batch_size M, gradient accumulation 1, steps_per_generation S / M, num_generations K, num_iterations = epochs, so
one iteration is S / M x epochs of its optimizer steps (one generation, then those updates), the same prompts,
samples and updates; TRL PPO: per_device_train_batch_size P, one minibatch (M = S only), num_ppo_epochs, so one of
its updates is one iteration. Each run does --rl-warmup iterations, then --rl-iterations timed ones; model loading
is never timed. Ours: the four times of each metrics.jsonl row (generate; reward; forward: the policy's old
log-probs, the reference's and the values; update); TRL's: its steps' wall time (trl_side.py says how), split the
same way. The trainers' own choices stay: ours recomputes the sampled tokens' log-probs every iteration (and checks
them against sampling), TRL's GRPO skips that pass when generation and updates are aligned and its PPO takes them
from the generation scores; TRL's PPO scores with a second copy of the reward model (ours shares it with the value
model, whose adapters are then off). Its value model gets LoRA adapters like ours (TRL's default would train every
weight). Generation limit: after our run, in the same process, a bare model.generate on each timed iteration's
batch (same prompts, seeds, sampling, left padding; see bare_generate), on the SFT model and with LoRA adapters
attached, in tokens per second, next to our generation's rate (response tokens / time_generate_s). grpo gives our
stage no penalty for a response cut at max_new_tokens (TRL's GRPOTrainer has none); ppo 1.0 on both sides.

    bash benchmarks/setup_bench_env.sh                         # once: .venv-bench with TRL, gguf, SmolLM2
    bash benchmarks/setup_bench_ppo_env.sh                     # once, for ppo: .venv-bench-ppo with TRL 1.12.0
    .venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct
    .venv/bin/python benchmarks/bench_align.py [--model runs/smollm2-135m-instruct] [--small] [--rounds 3] \
        [--modes sft-lora sft-full reward dpo grpo ppo]
    .venv/bin/python benchmarks/bench_align.py --modes grpo ppo [--policy runs/real/sft-smollm2] \
        [--reward-model runs/real/reward-smollm2-c] [--prompts-per-iteration 4] [--samples 4] [--max-new-tokens 32] \
        [--rl-warmup 1] [--rl-iterations 2] [--ppo-epochs 1] [--minibatch 0] [--rounds 3]
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

from interleave import children_cpu_s  # benchmarks/interleave.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TRAIN_MODES = ("sft-lora", "sft-full", "reward", "dpo")
RL_MODES = ("grpo", "ppo")
MODES = TRAIN_MODES + RL_MODES
RL_TIME_KEYS = ("time_generate_s", "time_reward_s", "time_forward_s", "time_update_s")  # gristmill.align.ppo.TIME_KEYS
# who runs in a round, in the first round's order (later rounds rotate it); trl-pre: precompute_ref_log_probs
SIDES = {"dpo": ("ours", "trl", "trl-pre")}
DPO_LR, DPO_BETA = 5e-5, 0.1  # our dpo stage's LoRA defaults (TRL's 1e-6 lr is meant for full fine-tuning)
LOSS_TOLERANCE = 1e-6


def child(argv: list[str]) -> int:
    """Run the gristmill CLI in this process, then print its peak RSS (for dpo the reference cache's seconds;
    for ppo the bare-generate measurement, taken after the run) as the last stdout line."""
    from gristmill.cli import main

    timing = time_reference_cache() if argv[:2] == ["align", "dpo"] else {}
    rc = main(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if argv[:2] == ["align", "ppo"] and rc == 0:
        c0 = time.process_time()
        timing["bare"] = bare_generate(argv[2:], warmup=int(os.environ.get("BENCH_RL_WARMUP", "1")))
        timing["bare_cpu_s"] = time.process_time() - c0  # taken off this run's CPU: TRL's side has no such extra
    print(json.dumps({"peak_rss_mb": peak, **timing}))
    return rc


def stage_prompt_order(n: int, per_iteration: int, iterations: int, seed: int) -> list[list[int]]:
    """The prompt indices the ppo stage trains on in each iteration (gristmill.align.ppo's prompts_for): position
    pos of the run is perm[pos % n] of a permutation seeded with seed + pos // n."""
    import torch

    out = []
    for it in range(iterations):
        idx = []
        for pos in range(it * per_iteration, (it + 1) * per_iteration):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + pos // n))
            idx.append(perm[pos % n].item())
        out.append(idx)
    return out


def bare_generate(argv: list[str], warmup: int) -> dict:
    """The limit of the ppo stage's generation: a bare model.generate over the same rollout batches as each timed
    iteration (the same prompts, each repeated `samples` times, left-padded, ppo.rollout_batch_size rows per
    call, the same seeds, temperature, top-p, top-k 0, max_new_tokens and stop tokens), on the SFT model as
    loaded by the stage, without the stage's extras (log-probs from the raw logits, decoding); then again with
    the stage's LoRA adapters attached (freshly initialised: B = 0, so the same outputs, the adapters' extra matmuls included).
    The trained policy has moved by then, so its samples (and lengths) differ: rates are tokens per second,
    counting each response through its stop token as the stage does. Only generate() is timed."""
    import torch

    from gristmill.align.chat import encode_prompt, pad_id, stop_ids
    from gristmill.align.config import LoraConfig
    from gristmill.align.data import DataConfig, load_prompts
    from gristmill.align.models import add_lora, load_causal_lm, load_tokenizer, model_dir
    from gristmill.manifests import read_manifest

    ap = argparse.ArgumentParser()
    for flag in ("--model", "--data", "--out"):
        ap.add_argument(flag, type=Path)
    opt, _ = ap.parse_known_args(argv)
    c = read_manifest(opt.out).config
    P, K, T = c["prompts_per_iteration"], c["samples"], c["max_new_tokens"]
    rows_per_call = c.get("rollout_batch_size", 16)  # rollout.sample's batch_size (16 before the setting existed)
    folder = model_dir(opt.model)
    tok = load_tokenizer(folder)
    pad, stops = pad_id(tok), stop_ids(tok)
    recs = load_prompts([opt.data], DataConfig(eval_fraction=0)).records
    order = stage_prompt_order(len(recs), P, c["max_steps"], c["seed"])

    def batches(it: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        enc = [encode_prompt(tok, recs[i].messages, max_length=c["max_length"] - T) for i in order[it] for _ in range(K)]
        out = []
        for i in range(0, len(enc), rows_per_call):
            rows = enc[i:i + rows_per_call]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, e in enumerate(rows):
                ids[r, width - len(e):], mask[r, width - len(e):] = torch.tensor(e), 1
            out.append((c["seed"] * 1_000_003 + it * 10_007 + i, ids, mask))
        return out

    def run(model: object, it: int) -> tuple[int, float]:
        tokens, seconds = 0, 0.0
        for seed, ids, mask in batches(it):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=c["temperature"],
                                     top_p=c["top_p"], top_k=0, max_new_tokens=T, eos_token_id=stops, pad_token_id=pad)
                seconds += time.perf_counter() - t0
            for row in gen[:, ids.shape[1]:].tolist():
                tokens += next((j + 1 for j, x in enumerate(row) if x in stops), len(row))
        return tokens, seconds

    model = load_causal_lm(folder, pad=pad).eval()
    got = {}
    for name in ("bare", "bare_lora"):
        if name == "bare_lora":
            model = add_lora(model, LoraConfig(**c["lora"]), task_type="CAUSAL_LM", seed=c["seed"]).eval()
        run(model, 0)  # warm-up: the stage's first (warm-up) iteration's batch
        tokens, seconds = map(sum, zip(*(run(model, it) for it in range(warmup, c["max_steps"]))))
        got[name] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_s": round(tokens / seconds, 2)}
    return got


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
    """One run of one side, with its whole wall time and CPU seconds (the process, start to exit)."""
    t0, c0 = time.perf_counter(), children_cpu_s()
    r = (ours(args, mode, model, data, out, ref_cache) if side == "ours"
         else trl(args, mode, model, data, precompute=side == "trl-pre"))
    return r | {"wall": time.perf_counter() - t0, "cpu": children_cpu_s() - c0}


def rl_sizes(args: argparse.Namespace, mode: str) -> dict:
    """P prompts x K samples = S responses per iteration, M per optimizer update, n iterations (warm-up first).
    ppo: one sample, and one minibatch (TRL's PPOTrainer side supports no other)."""
    P, K = args.prompts_per_iteration, args.samples if mode == "grpo" else 1
    M = args.minibatch if mode == "grpo" and args.minibatch else P * K
    return {"P": P, "K": K, "S": P * K, "M": M, "n": args.rl_warmup + args.rl_iterations}


def ours_rl(args: argparse.Namespace, mode: str, prompts: Path, out: Path) -> dict:
    """Our ppo stage (advantage grpo or gae, the reward model's score) through the CLI; per iteration the four
    times its metrics.jsonl rows hold, the warm-up iterations left out; then the bare-generate limit."""
    sz = rl_sizes(args, mode)
    sets = {"advantage": "grpo" if mode == "grpo" else "gae", "reward": "model", "samples": sz["K"],
            "prompts_per_iteration": sz["P"], "minibatch_size": sz["M"], "ppo_epochs": args.ppo_epochs,
            "max_steps": sz["n"], "max_new_tokens": args.max_new_tokens,
            "max_length": args.max_prompt_tokens + args.max_new_tokens, "temperature": args.temperature,
            "kl_coef": args.kl_coef, "optim.lr": args.rl_lr, "judge_prompts": 0, "samples_shown": 0,
            "data.eval_fraction": 0, "device": "cpu", "checkpoint.every": 10**6,
            # grpo: the reward model's score alone, as TRL's GRPOTrainer has no penalty for a missing end token;
            # ppo: 1.0 for both (TRL's missing_eos_penalty)
            "unfinished_penalty": 0.0 if mode == "grpo" else args.missing_eos_penalty}
    argv = ["align", "ppo", "--model", str(args.policy), "--data", str(prompts), "--reward", str(args.reward_model),
            "--out", str(out), "--force"]
    argv += [a for k, v in sets.items() for a in ("--set", f"ppo.{k}={set_value(v)}")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), BENCH_RL_WARMUP=str(args.rl_warmup))
    r = run_json([sys.executable, __file__, "--_child", *argv], env=env)
    from gristmill.pretrain.plots import read_rows

    # the time_* fields live in timings.jsonl beside metrics.jsonl (which holds the deterministic fields only)
    rows = read_rows(out / "metrics.jsonl", with_timings=True)
    timed = rows[args.rl_warmup:]
    n = len(timed)
    split = {k[5:-2]: sum(row[k] for row in timed) / n for k in RL_TIME_KEYS}
    gen_tokens = sum(row["response_tokens"] * sz["S"] for row in timed)
    mt = json.loads((out / "manifest.json").read_text())["metrics"]
    return {"s_per_iter": sum(split.values()), "split": split, "rss": r["peak_rss_mb"],
            "tokens": [row["response_tokens"] for row in timed], "gen_tok_s": gen_tokens / (split["generate"] * n),
            "bare_tok_s": r["bare"]["bare"]["tok_s"], "bare_lora_tok_s": r["bare"]["bare_lora"]["tok_s"],
            "bare_cpu": r["bare_cpu_s"],
            "trainable": mt["trainable_params"] + mt["value_trainable_params"]}


def trl_rl(args: argparse.Namespace, mode: str, prompts: Path) -> dict:
    """TRL's GRPOTrainer (grpo) or PPOTrainer (ppo, from its own venv) through trl_side.py, on the HF folders."""
    from gristmill.align.models import model_dir

    sz = rl_sizes(args, mode)
    py = args.bench_python if mode == "grpo" else args.ppo_python
    cmd = [str(py), str(ROOT / "benchmarks" / "trl_side.py"), mode, "--model", str(model_dir(args.policy)),
           "--reward-model", str(model_dir(args.reward_model)), "--data", str(prompts),
           "--prompts-per-iteration", str(sz["P"]), "--samples", str(sz["K"]), "--minibatch", str(sz["M"]),
           "--ppo-epochs", str(args.ppo_epochs), "--iterations", str(args.rl_iterations), "--warmup",
           str(args.rl_warmup), "--max-new-tokens", str(args.max_new_tokens), "--temperature", str(args.temperature),
           "--kl-coef", str(args.kl_coef), "--lr", str(args.rl_lr), "--threads", str(args.threads)]
    if mode == "ppo":
        cmd += ["--missing-eos-penalty", str(args.missing_eos_penalty)]
    r = run_json(cmd)
    return {"s_per_iter": r["seconds_per_iteration"], "split": r["split_s"], "rss": r["peak_rss_mb"],
            "tokens": r["response_tokens"][args.rl_warmup:], "gen_tok_s": r["generate_tokens_per_s"],
            "version": r["trl_version"], "trainable": r["trainable_params"],
            "width": (r.get("generated_width") or [None])[args.rl_warmup:]}


def write_rl_prompts(args: argparse.Namespace, ours_path: Path, trl_path: Path) -> dict:
    """HH prompts read by our own loader (the conversation up to the last Human turn), the first distinct ones
    whose chat-templated prompt fits --max-prompt-tokens (neither side truncates then), exactly as many as
    the run consumes (so each is trained on once). Ours in file order; TRL's in the order our stage visits
    them, which both TRL trainers follow unshuffled: the same prompts in the same iterations on both sides."""
    from gristmill.align.chat import encode_prompt
    from gristmill.align.data import DataConfig, load_prompts
    from gristmill.align.models import load_tokenizer, model_dir

    tok = load_tokenizer(model_dir(args.policy))
    need = args.prompts_per_iteration * (args.rl_warmup + args.rl_iterations)
    keep, seen, lengths = [], set(), []
    for r in load_prompts([args.prompts], DataConfig(eval_fraction=0)).records:
        key = json.dumps(r.messages, sort_keys=True)
        n = len(encode_prompt(tok, r.messages, max_length=10**9))
        if key in seen or n > args.max_prompt_tokens:
            continue
        seen.add(key)
        keep.append(r.messages)
        lengths.append(n)
        if len(keep) == need:
            break
    if len(keep) < need:
        raise SystemExit(f"{args.prompts}: only {len(keep)} distinct prompts fit {args.max_prompt_tokens} tokens; "
                         f"{need} needed")
    ours_path.write_text("".join(json.dumps({"prompt": m}) + "\n" for m in keep), encoding="utf-8")
    order = [i for it in stage_prompt_order(need, args.prompts_per_iteration, args.rl_warmup + args.rl_iterations,
                                             seed=0) for i in it]  # PPOConfig.seed's default
    trl_path.write_text("".join(json.dumps({"prompt": keep[i]}) + "\n" for i in order), encoding="utf-8")
    return {"prompts": need, "mean_tokens": sum(lengths) / need, "max_tokens": max(lengths)}


def measure_rl(args: argparse.Namespace, side: str, mode: str, prompts: dict[str, Path], out: Path) -> dict:
    t0, c0 = time.perf_counter(), children_cpu_s()
    r = ours_rl(args, mode, prompts["ours"], out) if side == "ours" else trl_rl(args, mode, prompts["trl"])
    return r | {"wall": time.perf_counter() - t0, "cpu": children_cpu_s() - c0 - r.get("bare_cpu", 0.0)}


def rl_side(r: dict) -> str:
    s = r["split"]
    toks = r["tokens"]  # mean response length of each timed iteration
    width = f"; generated width {r['width']}" if r.get("width") and r["width"][0] is not None else ""
    return (f"{r['s_per_iter']:6.2f} s/iter (gen {s['generate']:.2f} / reward {s['reward']:.2f} / fwd {s['forward']:.2f}"
            f" / update {s['update']:.2f}; {sum(toks) / len(toks):.1f} tok/response{width}; gen {r['gen_tok_s']:.1f} "
            f"tok/s; {r['trainable'] / 1e6:.2f} M trained; {r['rss']:.0f} MB)")


def rl_line(got: dict) -> str:
    o = got["ours"]
    line = f"ours {rl_side(o)}"
    if "trl" in got:
        t = got["trl"]
        line += (f"  trl {rl_side(t)}  ours/trl {o['s_per_iter'] / t['s_per_iter']:.2f}x (run CPU "
                 f"{o['cpu'] / t['cpu']:.2f}x)")
    return line + f"  bare generate {o['bare_tok_s']:.1f} tok/s (+LoRA {o['bare_lora_tok_s']:.1f})"


def rl_summary(rs: list[dict]) -> str:
    def med(side: str, key: str) -> float:
        return statistics.median(g[side][key] for g in rs)

    total = med("ours", "s_per_iter")
    split = ", ".join(f"{k} {statistics.median(g['ours']['split'][k] for g in rs):.2f} s "
                      f"({statistics.median(g['ours']['split'][k] / g['ours']['s_per_iter'] for g in rs):.0%})"
                      for k in ("generate", "reward", "forward", "update"))
    gen = (f"our generation {med('ours', 'gen_tok_s'):.1f} tok/s vs bare generate {med('ours', 'bare_tok_s'):.1f} "
           f"({spread([g['ours']['gen_tok_s'] / g['ours']['bare_tok_s'] for g in rs])} of it), bare + LoRA "
           f"{med('ours', 'bare_lora_tok_s'):.1f}")
    if "trl" not in rs[0]:
        return f"ours {total:.2f} s/iter (no TRL side); our split: {split}; {gen}"
    ratios = [g["ours"]["s_per_iter"] / g["trl"]["s_per_iter"] for g in rs]
    tsplit = ", ".join(f"{k} {statistics.median(g['trl']['split'][k] for g in rs):.2f} s"
                       for k in ("generate", "reward", "forward", "update"))
    return (f"s/iter ours/trl {spread(ratios)} (lower is better): ours {total:.2f} s vs trl {med('trl', 's_per_iter'):.2f}"
            f" s (TRL {rs[0]['trl']['version']}); our split: {split}; TRL's: {tsplit}; {gen}, TRL's generation "
            f"{med('trl', 'gen_tok_s'):.1f} tok/s; memory {spread([g['ours']['rss'] / g['trl']['rss'] for g in rs])} "
            f"(ours {med('ours', 'rss'):.0f} MB vs {med('trl', 'rss'):.0f} MB); whole run (ours without bare "
            f"generate) CPU {spread([g['ours']['cpu'] / g['trl']['cpu'] for g in rs])}")


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
    return (f"ours {o['rate']:9.1f} tok/s ({o['rss']:6.0f} MB; run {o['wall']:.1f} s, {o['cpu']:.1f} s CPU)  trl "
            f"{t['rate']:9.1f} tok/s ({t['rss']:6.0f} MB; run {t['wall']:.1f} s, {t['cpu']:.1f} s CPU)  "
            f"ratio {o['rate'] / t['rate']:.2f}x")


def dpo_line(got: dict) -> str:
    o, t, tp = got["ours"], got["trl"], got["trl-pre"]
    ref = f"{o['ref_s']:.1f} s" if o.get("ref_s") is not None else "n/a"
    return (f"ours {o['s_per_step']:.3f} s/step ({o['rss']:.0f} MB; run {o['wall']:.1f} s, {o['cpu']:.1f} s CPU, "
            f"ref cache {'warm' if o['ref_hit'] else 'cold'} {ref})  trl {t['s_per_step']:.3f} s/step ({t['rss']:.0f} "
            f"MB; run {t['wall']:.1f} s, {t['cpu']:.1f} s CPU)  trl+precompute {tp['s_per_step']:.3f} s/step "
            f"({tp['rss']:.0f} MB; run {tp['wall']:.1f} s, {tp['cpu']:.1f} s CPU, precompute {tp['ref_s']:.1f} s)  "
            f"ours/trl {o['s_per_step'] / t['s_per_step']:.2f}x  "
            f"ours/trl+precompute {o['s_per_step'] / tp['s_per_step']:.2f}x")


def rate_summary(rs: list[dict]) -> str:
    ratios = [g["ours"]["rate"] / g["trl"]["rate"] for g in rs]
    loops = [g["ours"]["rate_loop"] / g["trl"]["rate"] for g in rs]
    mem = [g["ours"]["rss"] / g["trl"]["rss"] for g in rs]
    wall = [g["ours"]["wall"] / g["trl"]["wall"] for g in rs]
    cpu = [g["ours"]["cpu"] / g["trl"]["cpu"] for g in rs]
    return (f"throughput {spread(ratios)}; with our checkpoints {statistics.median(loops):.2f}x; memory "
            f"{spread(mem)}; ours {statistics.median(g['ours']['rss'] for g in rs):.0f} MB vs "
            f"{statistics.median(g['trl']['rss'] for g in rs):.0f} MB; whole run wall {spread(wall)}, CPU {spread(cpu)}")


def dpo_summary(rs: list[dict]) -> str:
    def vs(key: str, peer: str) -> str:
        return spread([g["ours"][key] / g[peer][key] for g in rs])

    def mb(side: str) -> float:
        return statistics.median(g[side]["rss"] for g in rs)

    return (f"s/step ours/trl {vs('s_per_step', 'trl')}, ours/trl+precompute {vs('s_per_step', 'trl-pre')} "
            f"(target <= 0.50x); memory {vs('rss', 'trl')}, {vs('rss', 'trl-pre')} (ours {mb('ours'):.0f} MB vs "
            f"{mb('trl'):.0f} / {mb('trl-pre'):.0f} MB); whole run {vs('wall', 'trl')}, {vs('wall', 'trl-pre')}; "
            f"whole-run CPU {vs('cpu', 'trl')}, {vs('cpu', 'trl-pre')}")


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
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(TRAIN_MODES),
                    help="default: the training modes; grpo / ppo are the RL stage's (see the docstring)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--packing", action="store_true", help="our sft, reward and dpo pack rows (TRL stays padded): the stages' default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python")
    rl = ap.add_argument_group("grpo / ppo (the RL stage)")
    rl.add_argument("--policy", type=Path, default=ROOT / "runs" / "real" / "sft-smollm2", help="a gristmill sft folder")
    rl.add_argument("--reward-model", type=Path, default=ROOT / "runs" / "real" / "reward-smollm2-c",
                    help="a gristmill reward folder")
    rl.add_argument("--prompts", type=Path, default=SHARED / "preference" / "hh-rlhf" / "helpful-base" / "test.jsonl.gz",
                    help="HH records: the prompt is the conversation up to the last Human turn")
    rl.add_argument("--max-prompt-tokens", type=int, default=256, help="prompts longer than this are skipped")
    rl.add_argument("--prompts-per-iteration", type=int, default=4)
    rl.add_argument("--samples", type=int, default=4, help="grpo: responses per prompt (ppo: 1)")
    rl.add_argument("--minibatch", type=int, default=0,
                    help="grpo: responses per optimizer update; 0 = the whole batch (ppo: always the whole batch)")
    rl.add_argument("--ppo-epochs", type=int, default=1)
    rl.add_argument("--rl-iterations", type=int, default=2, help="timed iterations per run")
    rl.add_argument("--rl-warmup", type=int, default=1, help="iterations run first in each run, not timed")
    rl.add_argument("--max-new-tokens", type=int, default=32)
    rl.add_argument("--temperature", type=float, default=1.0)
    rl.add_argument("--kl-coef", type=float, default=0.05, help="ours ppo.kl_coef; TRL's beta (grpo) / kl_coef (ppo)")
    rl.add_argument("--rl-lr", type=float, default=1e-4, help="our ppo stage's default")
    rl.add_argument("--missing-eos-penalty", type=float, default=1.0, help="ppo: ours unfinished_penalty, TRL's "
                    "missing_eos_penalty (grpo: 0 on our side, as TRL's GRPOTrainer has none)")
    rl.add_argument("--ppo-python", type=Path, default=ROOT / ".venv-bench-ppo" / "bin" / "python",
                    help="the venv with the last TRL that ships PPOTrainer (1.12.0); missing: our ppo side alone")
    args = ap.parse_args()
    train_modes = [m for m in args.modes if m in TRAIN_MODES]
    rl_modes = [m for m in args.modes if m in RL_MODES]
    need = [(args.bench_python, "--bench-python (run benchmarks/setup_bench_env.sh)")]
    if train_modes:
        need += [(args.model / "config.json", "--model (run benchmarks/convert_smollm2.py)"),
                 (args.sft_data, "--sft-data"), (args.pairs, "--pairs")]
    if rl_modes:
        need += [(args.policy / "manifest.json", "--policy (a gristmill sft folder)"),
                 (args.reward_model / "manifest.json", "--reward-model (a gristmill reward folder)"),
                 (args.prompts, "--prompts")]
    for p, what in need:
        if not p.exists():
            raise SystemExit(f"{p}: missing; {what}")

    work = Path(tempfile.mkdtemp(prefix="bench_align."))
    sft_data, pair_data = work / "sft.jsonl", work / "pairs.jsonl"
    trl_side = [str(args.bench_python), str(ROOT / "benchmarks" / "trl_side.py")]
    if "dpo" in args.modes:
        check_dpo_loss(trl_side)
    models = []
    if train_modes:
        run_json(trl_side + ["prepare-sft", str(args.sft_data), str(sft_data), "--limit", str(args.records)])
        run_json(trl_side + ["prepare-hh", str(args.pairs), str(pair_data), "--limit", str(args.records * 2)])
        # exactly the pairs of one epoch: both sides train on the same pairs (only their grouping differs),
        # so a lucky or unlucky draw of long pairs cannot decide the ratio
        kept = fitting_pairs(pair_data, args.model, args.max_length, args.steps * args.batch_size)
        models = [("smollm2", args.model)] + ([("small", small_model(args.model, work / "small"))] if args.small else [])
        print(f"data: {sft_data} / {pair_data} ({args.records} SFT records; {kept} pairs that fit max length, one "
              f"epoch); {args.steps} steps, batch {args.batch_size}, max length {args.max_length}, fp32, "
              f"{args.threads} threads, our packing {'on' if args.packing else 'off'}", flush=True)
    rl_prompts = {"ours": work / "prompts.jsonl", "trl": work / "prompts-trl-order.jsonl"}
    rl_sides = {m: ("trl", "ours") for m in rl_modes}
    if "ppo" in rl_modes and not args.ppo_python.exists():
        print(f"ppo: {args.ppo_python} missing: our side alone (see the docstring for the TRL PPO venv)", flush=True)
        rl_sides["ppo"] = ("ours",)
    if rl_modes:
        info = write_rl_prompts(args, rl_prompts["ours"], rl_prompts["trl"])
        print(f"rl: {info['prompts']} HH prompts (mean {info['mean_tokens']:.0f}, max {info['max_tokens']} tokens) "
              f"from {args.prompts}; {args.prompts_per_iteration} prompts x {args.samples} samples (grpo) / 1 (ppo) "
              f"per iteration, minibatch {args.minibatch or 'whole batch'}, {args.ppo_epochs} epoch(s), "
              f"{args.max_new_tokens} new tokens, temperature {args.temperature}, LoRA r 16, fp32, {args.threads} "
              f"threads; {args.rl_warmup} warm-up + {args.rl_iterations} timed iterations per run; policy "
              f"{args.policy}, reward model {args.reward_model}", flush=True)

    results: dict[tuple[str, str], list[dict]] = {}
    for rnd in range(args.rounds):
        for mode in rl_modes:
            sides = rl_sides[mode]
            k = rnd % len(sides)
            got = {side: measure_rl(args, side, mode, rl_prompts, work / f"ours-rl-{mode}")
                   for side in sides[k:] + sides[:k]}
            results.setdefault(("smollm2", mode), []).append(got)
            print(f"round {rnd + 1} {'smollm2':8s} {mode:9s} {rl_line(got)}", flush=True)
        for name, model in models:
            for mode in train_modes:
                data = pair_data if mode in ("reward", "dpo") else sft_data
                sides = SIDES.get(mode, ("trl", "ours"))
                k = rnd % len(sides)
                got = {side: measure(args, side, mode, model, data, work / f"ours-{name}-{mode}",
                                     work / "reference-cache") for side in sides[k:] + sides[:k]}
                results.setdefault((name, mode), []).append(got)
                print(f"round {rnd + 1} {name:8s} {mode:9s} {dpo_line(got) if mode == 'dpo' else rate_line(got)}",
                      flush=True)

    print("\nmedian over rounds (range), ours/TRL: throughput (sft, reward: higher is better) or seconds per step "
          "(dpo: lower is better) or per iteration (grpo, ppo: lower is better), peak RSS, whole-run wall and CPU "
          "time (lower is better)")
    for (name, mode), rs in results.items():
        summary = rl_summary if mode in RL_MODES else dpo_summary if mode == "dpo" else rate_summary
        print(f"  {name:8s} {mode:9s} {summary(rs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
