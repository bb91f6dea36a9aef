"""Memory of every training stage on SmolLM2-135M: peak RSS of each `gristmill align` run (the models it holds, LoRA / full, fp32, gradient checkpointing on / off), and where one step's memory goes.

Table mode (default): each configuration is one `gristmill align ...` CLI run in its own process, started
with this interpreter (`python -m gristmill`, so PYTHONPATH picks the source tree), its peak RSS read from
its own rusage (os.wait4 on that child: RUSAGE_CHILDREN would mix the runs). Rows: sft; reward; dpo with the
reference log-probs cached (dpo.reference=cache) and without the cache (dpo.reference=adapter: the policy
with its adapters off at every step, LoRA only); ppo with GAE, the value model on the reward model's weights
(its own LoRA adapters and score head) and the reference by adapter-off (LoRA) or a frozen copy (full); each
LoRA and full fine-tuning, fp32, max_length 512, batch 4 (ppo: max_length 512 and its own batch settings:
prompts_per_iteration 8 x 1 sample, minibatch 8, 48 new tokens, rollout batch 64; 2 iterations). The peak
is reached in the first steps, so runs are short (--steps, --quick), evaluation and generation are cut
down to a few prompts, and a few hundred records are read.

    .venv/bin/python benchmarks/bench_memory.py [--model runs/smollm2-135m-instruct] [--data ../shared/data] \
        [--stages sft reward dpo-cache dpo-adapter ppo] [--modes lora full] [--gradient-checkpointing] \
        [--quick] [--malloc-mmap-threshold 1048576] [--threads 2] [--reward-model PATH] [--dry-run]

--gradient-checkpointing adds `--set <stage>.gradient_checkpointing=true` to every command (the key is
absent from older trees: leave the flag off there). --malloc-mmap-threshold N sets MALLOC_MMAP_THRESHOLD_=N
and THP_MEM_ALLOC_ENABLE=1 for the children: glibc then serves every allocation of N bytes or more with its
own mmap and returns it on free, instead of growing the heap (the default raises that threshold to 32 MB as
the first big blocks are freed, after which the freed activations of one layer stay resident as heap holes),
and torch backs those blocks with huge pages (fewer page faults); what gristmill.train.memory.
return_freed_memory() does from inside the process. The table's header says which allocator settings ran.

Breakdown mode (--breakdown): one training micro-step at batch 4, max_length 512, the worst case of the
data (sft: the 4 fullest packed rows of Alpaca; reward: the 4 longest HH pairs, each its prompt once and
both answers, so rows up to 2 x max_length wide), in a fresh process per variant (attention sdpa / eager,
LoRA dropout, the vocabulary head on / off, gradient checkpointing, allocator), printing the RSS after
loading, after the forward, the peak, the CPU seconds of the step, and the bytes autograd keeps for the
backward (distinct non-parameter storages; under checkpointing, what stays outside the checkpoints).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STAGES = ("sft", "reward", "dpo-cache", "dpo-adapter", "ppo")
HELD = {
    "sft": "policy",
    "reward": "reward model (+ score head)",
    "dpo-cache": "policy; reference log-probs from the disk cache (one reference pass before training)",
    "dpo-adapter": "policy + reference (the same weights, adapters off)",
    ("ppo", "lora"): "policy + reference (adapters off) + value (LoRA + head on the RM's weights) + reward (RM, adapters off)",
    ("ppo", "full"): "policy + reference (frozen copy) + value (LoRA + head on the RM's weights) + reward (RM, adapters off)",
}


def sets(stage: str, **kv: object) -> list[str]:
    out = []
    for k, v in kv.items():
        out += ["--set", f"{stage}.{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def command(args: argparse.Namespace, row: str, mode: str, out: Path, reward: Path | None = None,
            steps: int | None = None, checkpointing: bool | None = None) -> list[str] | None:
    """The CLI command of one row, or None where the configuration does not exist (adapter-off without LoRA)."""
    data = Path(args.data)
    sft_data = [data / "sft" / "llamafactory_alpaca_en_demo.json"]
    hh = data / "preference" / "hh-rlhf"
    pairs = [hh / "harmless-base" / "test.jsonl.gz", hh / "helpful-base" / "test.jsonl.gz"]
    stage = row.split("-")[0]
    lora = mode == "lora"
    if row == "dpo-adapter" and not lora:
        return None
    steps = steps or (2 if args.quick else args.steps)
    common = dict(max_length=args.max_length, batch_size=args.batch_size, max_steps=steps)
    common |= {"optim.warmup_steps": 0, "lora.enabled": lora}
    base = [sys.executable, "-m", "gristmill", "align", stage, "--model", str(args.model)]
    if stage == "sft":
        cmd = base + ["--data", *map(str, sft_data)] + sets("sft", **common, eval_generate=0, samples=0,
                                                            **{"data.max_records": args.records})
    elif stage == "reward":
        cmd = base + ["--data", *map(str, pairs)] + sets("reward", **common, **{"data.max_records": args.records})
    elif stage == "dpo":
        cmd = base + ["--data", *map(str, pairs)] + sets(
            "dpo", **common, reference=row.split("-")[1], judge_prompts=args.judge_prompts, samples=0,
            cache_dir=str(out.parent / "ref-cache"), **{"data.max_records": args.records // 4})
    else:  # ppo: gae, the value model on the reward model's weights
        cmd = base + ["--reward", str(reward), "--data", str(hh / "helpful-base" / "test.jsonl.gz")]
        iterations = {"max_steps": 1 if args.quick else 2}
        cmd += sets("ppo", max_length=args.max_length, **iterations, advantage="gae", reward="model",
                    judge_prompts=args.judge_prompts, eval_samples=0, samples_shown=0,
                    **{"lora.enabled": lora, "optim.warmup_steps": 0, "data.max_records": args.records})
    if args.gradient_checkpointing if checkpointing is None else checkpointing:
        cmd += sets(stage, gradient_checkpointing=True)
    return cmd + ["--out", str(out), "--force"]


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`; its own peak RSS (GB), wall and CPU seconds, exit status."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"peak_gb": ru.ru_maxrss * 1024 / 1e9, "wall_s": time.perf_counter() - t0,
            "cpu_s": ru.ru_utime + ru.ru_stime, "rc": p.returncode}


def reward_stage(args: argparse.Namespace, work: Path, env: dict[str, str], gc: str) -> Path:
    """ppo's --reward: --reward-model, else this run's LoRA reward row, else a 1-step reward stage made for it
    (not measured): a finished reward stage folder is what ppo takes."""
    if args.reward_model:
        return Path(args.reward_model)
    for out in (work / f"reward-lora-gc{gc}", work / "reward-for-ppo"):
        if (out / "manifest.json").is_file():
            return out
    out = work / "reward-for-ppo"
    cmd = command(args, "reward", "lora", out, steps=1, checkpointing=False)
    if args.dry_run:
        print("# ppo's reward model: " + " ".join(shlex.quote(c) for c in ["gristmill", *cmd[3:]]))
        return out
    print(f"# making ppo's reward model (1 step, not measured): {out}", flush=True)
    r = run_child(cmd, env, out.with_suffix(".log"))
    if r["rc"]:
        raise SystemExit(f"the reward stage for ppo failed; see {out}.log")
    return out


def table(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
        env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "bench-memory"
    if not args.dry_run:
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-memory-"))
        work.mkdir(parents=True, exist_ok=True)
    gc = "on" if args.gradient_checkpointing else "off"
    lines = ["| stage | models held | LoRA / full | dtype | gradient checkpointing | peak RSS GB | wall s | CPU s | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print(f"# bench_memory: {args.model}, max_length {args.max_length}, batch {args.batch_size}; "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '(default)')}, "
          f"MALLOC_MMAP_THRESHOLD_={env.get('MALLOC_MMAP_THRESHOLD_', '(glibc default)')}, "
          f"THP_MEM_ALLOC_ENABLE={env.get('THP_MEM_ALLOC_ENABLE', '(unset)')}; logs in {work}", flush=True)
    failed = 0
    for row in args.stages:
        for mode in args.modes:
            out = work / f"{row}-{mode}-gc{gc}"
            rm = reward_stage(args, work, env, gc) if row == "ppo" else None
            cmd = command(args, row, mode, out, rm)
            if cmd is None:
                continue
            shown = " ".join(shlex.quote(c) for c in ["gristmill", *cmd[3:]])
            held = HELD.get(row) or HELD[(row, mode)]
            if args.dry_run:
                print(shown)
                continue
            r = run_child(cmd, env, out.with_suffix(".log"))
            peak = f"{r['peak_gb']:.2f}" if r["rc"] == 0 else f"{r['peak_gb']:.2f} (exit {r['rc']}: see {out}.log)"
            failed += r["rc"] != 0
            lines.append(f"| {row} | {held} | {mode} | fp32 | {gc} | {peak} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | `{shown}` |")
            print(lines[-1], flush=True)
    if not args.dry_run:
        print("\n" + "\n".join(lines))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------------------
# breakdown: one micro-step, in a fresh process per variant

VARIANTS = [  # (stage, label, step options, extra environment)
    ("sft", "LoRA, sdpa (as shipped)", {}, {}),
    ("sft", "LoRA, eager attention", {"attn": "eager"}, {}),
    ("sft", "LoRA, lora.dropout=0", {"dropout": 0.0}, {}),
    ("sft", "LoRA, no vocabulary head (hidden.sum())", {"head": "none"}, {}),
    ("sft", "LoRA, gradient checkpointing", {"gc": True}, {}),
    ("sft", "LoRA, gradient checkpointing, MALLOC_MMAP_THRESHOLD_=1 MB", {"gc": True}, {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
    ("sft", "LoRA, gradient checkpointing, no head, MALLOC_MMAP_THRESHOLD_=1 MB", {"gc": True, "head": "none"},
     {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
    ("sft", "full, sdpa", {"lora": False}, {}),
    ("sft", "full, gradient checkpointing, MALLOC_MMAP_THRESHOLD_=1 MB", {"lora": False, "gc": True},
     {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
    ("sft", "LoRA, an evaluation forward with full (B, T, V) logits (no_grad; sft's evaluate() before the training core)",
     {"phase": "eval"}, {}),
    ("reward", "LoRA, sdpa (as shipped)", {}, {}),
    ("reward", "LoRA, gradient checkpointing", {"gc": True}, {}),
    ("reward", "LoRA, gradient checkpointing, MALLOC_MMAP_THRESHOLD_=1 MB", {"gc": True}, {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
    ("reward", "LoRA, gradient checkpointing, MALLOC_MMAP_THRESHOLD_=1 MB + THP_MEM_ALLOC_ENABLE=1", {"gc": True},
     {"MALLOC_MMAP_THRESHOLD_": "1048576", "THP_MEM_ALLOC_ENABLE": "1"}),
    ("reward", "full, gradient checkpointing, MALLOC_MMAP_THRESHOLD_=1 MB", {"lora": False, "gc": True},
     {"MALLOC_MMAP_THRESHOLD_": "1048576"}),
]


def step(opts: dict) -> dict:
    """One micro-step of `opts["stage"]` on the real model and data; RSS figures in MB (runs in a child)."""
    import resource

    import psutil
    import torch

    from gristmill.align.chat import IGNORE, encode_chat, pad_id
    from gristmill.align.data import DataConfig, load_preferences, load_sft, split_eval
    from gristmill.align.models import load_tokenizer
    from gristmill.align.packing import collate, pack

    def rss() -> float:
        return psutil.Process().memory_info().rss / 2**20

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    folder, T, B = Path(opts["model"]), opts["max_length"], opts["batch_size"]
    data = Path(opts["data"])
    tok = load_tokenizer(folder)
    pad = pad_id(tok)
    kw = dict(local_files_only=True, dtype=torch.float32, attn_implementation=opts.get("attn", "sdpa"),
              use_safetensors=True)
    torch.manual_seed(0)
    info: dict = {}
    if opts["stage"] == "sft":
        from transformers import AutoModelForCausalLM

        recs, _ = split_eval(load_sft([data / "sft" / "llamafactory_alpaca_en_demo.json"],
                                      DataConfig(max_records=200)).records, 0.05)
        enc = [encode_chat(tok, r.messages, max_length=T) for r in recs]
        rows = pack([len(e.input_ids) for e in enc], T)[:B]  # the fullest rows
        batch = collate(enc, pad_id=pad, packed=True, rows=rows)
        model = AutoModelForCausalLM.from_pretrained(folder, **kw)
        task = "CAUSAL_LM"
        info["tokens"], info["targets"] = batch["input_ids"].numel(), int((batch["labels"] != IGNORE).sum())
    else:
        from transformers import AutoModelForSequenceClassification

        from gristmill.align.scoring import collate_groups

        hh = data / "preference" / "hh-rlhf"
        recs, _ = split_eval(load_preferences([hh / "harmless-base" / "test.jsonl.gz", hh / "helpful-base" / "test.jsonl.gz"],
                                              DataConfig(max_records=200)).records, 0.05)
        groups = []
        for p in recs:
            c = encode_chat(tok, p.prompt + p.chosen, max_length=T, completion_turns=len(p.chosen)).input_ids
            r = encode_chat(tok, p.prompt + p.rejected, max_length=T, completion_turns=len(p.rejected)).input_ids
            groups.append([c, r])
        groups = sorted(groups, key=lambda g: -sum(map(len, g)))[:B]  # the longest pairs
        batch = collate_groups(groups, pad_id=pad, max_length=T, packed=True)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, pad_token_id=pad, **kw)
        task = "SEQ_CLS"
        info["rows_x_width"] = list(batch["input_ids"].shape)
    if opts.get("lora", True):
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=opts.get("dropout", 0.05),
                                                 target_modules=targets))
    if opts.get("gc"):
        from gristmill.train.memory import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    model.train()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model

    def loss_fn() -> torch.Tensor:
        if opts["stage"] == "sft":
            labels = batch["labels"]
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            if opts.get("head") == "none":
                return inner.model(**inputs).last_hidden_state.sum()
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != IGNORE
            logits = model(**inputs, logits_to_keep=keep).logits
            return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]], reduction="sum")
        from gristmill.align.scoring import SequenceScorer

        r = SequenceScorer(model)(**batch)
        return -torch.nn.functional.logsigmoid(r[0::2] - r[1::2]).sum()

    info["rss_loaded_mb"] = rss()
    saved: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack_hook(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    t0 = time.process_time()
    if opts.get("phase") == "eval":
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            targets = batch["labels"][:, 1:]
            logits = model(**inputs).logits[:, :-1].float()  # sft's evaluate()
            sel = targets != IGNORE
            torch.nn.functional.cross_entropy(logits[sel], targets[sel], reduction="sum")
            (logits[sel].argmax(-1) == targets[sel]).sum()
    else:
        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            loss = loss_fn()
        info["rss_after_forward_mb"] = rss()
        info["saved_for_backward_mb"] = sum(saved.values()) / 2**20
        loss.backward()
    info["cpu_s"] = time.process_time() - t0
    info["peak_mb"] = peak()
    return info


def breakdown(args: argparse.Namespace) -> int:
    base = {"model": str(args.model), "data": str(args.data), "max_length": args.max_length, "batch_size": args.batch_size}
    env0 = dict(os.environ)
    if args.threads:
        env0["OMP_NUM_THREADS"] = str(args.threads)
    print(f"# one micro-step, batch {args.batch_size}, max_length {args.max_length}, fp32, "
          f"OMP_NUM_THREADS={env0.get('OMP_NUM_THREADS', '(default)')}")
    print("| stage | variant | batch | RSS loaded MB | after forward MB | kept for backward MB | peak MB | step growth MB | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for stage, label, opts, extra in VARIANTS:
        if args.stages and stage not in args.stages:
            continue
        cmd = [sys.executable, __file__, "--_step", json.dumps(base | opts | {"stage": stage})]
        p = subprocess.run(cmd, env=env0 | extra, capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            print(f"| {stage} | {label} | failed: {p.stderr.strip().splitlines()[-1:]} |||||||")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        shape = r.get("rows_x_width") or f"{r['tokens']} tokens, {r['targets']} targets"

        def f(k: str) -> str:
            return f"{r[k]:,.0f}" if k in r else "-"

        growth = r["peak_mb"] - r["rss_loaded_mb"]
        print(f"| {stage} | {label} | {shape} | {f('rss_loaded_mb')} | {f('rss_after_forward_mb')} | "
              f"{f('saved_for_backward_mb')} | {f('peak_mb')} | {growth:,.0f} | {r['cpu_s']:.1f} |", flush=True)
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--_step":
        print(json.dumps(step(json.loads(sys.argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "smollm2-135m-instruct")
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (sft/, preference/hh-rlhf/)")
    ap.add_argument("--reward-model", type=Path, default=None,
                    help="ppo's --reward (a finished reward stage folder); default: this run's LoRA reward row, "
                         "else a 1-step reward stage trained for it")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="pass --set <stage>.gradient_checkpointing=true (trees that have the key)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per run (ppo: 2 iterations)")
    ap.add_argument("--records", type=int, default=200, help="records read per data file (dpo: a quarter)")
    ap.add_argument("--judge-prompts", type=int, default=4, help="dpo / ppo held-out prompts answered before / after")
    ap.add_argument("--quick", action="store_true", help="2 steps (ppo: 1 iteration)")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the children (0: inherit)")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=0,
                    help="MALLOC_MMAP_THRESHOLD_ for the children, bytes (0: glibc's dynamic default)")
    ap.add_argument("--work", default="", help="output folder for the runs (default: a new temp folder)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    ap.add_argument("--breakdown", action="store_true", help="one micro-step per variant instead of whole runs")
    args = ap.parse_args()
    if args.breakdown:
        args.stages = [s for s in args.stages if s in ("sft", "reward")] if "--stages" in sys.argv else []
        return breakdown(args)
    return table(args)


if __name__ == "__main__":
    sys.exit(main())
