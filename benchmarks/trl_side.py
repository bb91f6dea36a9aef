"""TRL's side of the align benchmark: one SFTTrainer, RewardTrainer or DPOTrainer run on CPU in fp32, measured, printed as one JSON line.

Run with the benchmark venv (TRL is never a dependency of gristmill: `bash benchmarks/setup_bench_env.sh`).
benchmarks/bench_align.py calls it as a subprocess; this command line is stable:

    python trl_side.py sft    --model DIR --data FILE [options]   # FILE: JSONL rows {"messages": [{role, content}, ...]}
    python trl_side.py reward --model DIR --data FILE [options]   # FILE: JSONL rows {"chosen": [msgs], "rejected": [msgs]}
    python trl_side.py dpo    --model DIR --data FILE [options]   # FILE: as for reward
    python trl_side.py check-dpo-loss [--pairs N] [--betas B ...]  # gristmill's dpo_loss vs TRL's sigmoid loss
    python trl_side.py prepare-sft SRC OUT [--limit N]   # Alpaca JSON / JSONL {instruction, input?, output} -> messages
    python trl_side.py prepare-hh  SRC OUT [--limit N]   # Anthropic HH JSONL(.gz) strings -> chosen / rejected messages

Training options (sft, reward and dpo):
    --steps N (10)            optimizer steps (max_steps); gradient accumulation 1, so N batches
    --batch-size B (4)        per step: B sequences (sft; packed rows with --packing) or B pairs (reward, dpo)
    --max-length L (512)      sft: truncate (or pack) to L tokens; reward: TRL drops pairs longer than L;
                              dpo: TRL truncates prompt + completion to L
    --lora | --full           LoRA adapter (default) or every weight trained
    --lora-r 16 --lora-alpha 32 --lora-dropout 0.05
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
    --lr X                    default 2e-4 with LoRA, 2e-5 full
    --beta X (0.1)            dpo only: DPOConfig.beta; loss_type is "sigmoid" (plain DPO)
    --precompute-ref | --no-precompute-ref
                              dpo only (default off): DPOConfig.precompute_ref_log_probs. Off: the reference is
                              the policy with its LoRA adapter disabled, one extra forward per step. On: TRL runs
                              the reference over the whole dataset inside DPOTrainer.__init__ (TRL 1.16), so
                              outside train_time_s; timed as ref_precompute_s. dpo keeps LoRA dropout on
                              (disable_dropout=False), as gristmill's dpo does.
    --packing | --no-packing  sft only (default: no packing); TRL's "bfd" packing, padding-free rows
    --loss completion | all   sft only (default completion): rows become prompt / completion (loss on the last
                              assistant turn, as gristmill's assistant mask for single-turn data); `all`: plain
                              messages, loss on every token
    --gradient-checkpointing  TRL's SFT default; off here unless given, so both sides do the same work
    --max-records N           read only the first N rows of FILE (less tokenising before the run)
    --seed S (0)  --threads T (2)

Output (stdout, one line; everything else goes to stderr):
    {"peer": "trl", "trl_version", "mode", "model", "steps" (steps done), "batch_size", "max_length", "lora",
     "packing", "loss_on" (sft: completion | all), "gradient_checkpointing", "lr",
     "train_time_s"       perf_counter around trainer.train(); the rates below divide by it
     "train_runtime_s"    TRL's own train_runtime metric
     "tokens"             non-pad tokens in the batches trained on (counted at the collator's output)
     "loss_tokens"        tokens with a label (sft) - null for reward
     "sequences"          examples in those batches (sft: packed examples counted one by one)
     "pairs"              preference pairs trained on (reward, dpo) - null for sft
     "tokens_per_s", "pairs_per_s", "peak_rss_mb" (ru_maxrss of this process), "rss_before_train_mb",
     "seconds_per_step"   train_time_s / steps
     "init_time_s"        building the trainer (tokenising; dpo with --precompute-ref: the reference pass too)
     "precompute_ref", "ref_precompute_s"   dpo only: the flag, and the seconds of TRL's reference pass
                          (in init_time_s, not in train_time_s; 0 when off)
     "step_times_s"       wall time of each optimizer step (the first ones include warm-up)
     "final_loss" (last step), "mean_loss" (over the run), "trainable_params", "dataset_rows", "threads",
     "attn_implementation", "seconds_total" (the whole process: loading and tokenising included)}

check-dpo-loss prints {"max_abs_diff", "pairs", "betas", "trl_version"}: fixed random sequence log-probs
through gristmill.align.losses.dpo_loss and through TRL's own sigmoid-loss code (see check_dpo_loss).
"""
from __future__ import annotations

import os

# Local files only: no hub look-ups, no dataset downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import argparse
import atexit
import contextlib
import gzip
import json
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


# ---------------------------------------------------------------- data preparation (standard library only)

def read_records(path: Path) -> list[dict]:
    """A JSON array or JSONL file (plain or .gz) -> its records."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def alpaca_messages(rec: dict) -> list[dict] | None:
    """{instruction, input?, output | response} -> [user, assistant]; None when a side is empty."""
    prompt = (rec.get("instruction") or "").strip()
    if (rec.get("input") or "").strip():
        prompt += "\n\n" + rec["input"].strip()
    answer = (rec.get("output") or rec.get("response") or "").strip()
    if not prompt or not answer:
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def hh_messages(text: str) -> list[dict] | None:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> alternating user / assistant messages ending with the assistant.

    None when the string does not start with a Human turn, the roles do not alternate, or a turn is empty.
    """
    parts = _HH_TURN.split(text)  # ["", "Human", text, "Assistant", text, ...]
    if parts[0].strip() or len(parts) < 5:
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    msgs = [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]
    if any(not m["content"] for m in msgs) or msgs[-1]["role"] != "assistant":
        return None
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(msgs)):
        return None
    return msgs


def prepare(kind: str, src: Path, out: Path, limit: int | None) -> dict:
    """Convert `src` into the JSONL that `sft` / `reward` read; returns counts (kept, skipped)."""
    rows, skipped = [], 0
    for rec in read_records(src):
        if kind == "sft":
            msgs = alpaca_messages(rec)
            row = {"messages": msgs} if msgs else None
        else:
            chosen, rejected = hh_messages(rec.get("chosen", "")), hh_messages(rec.get("rejected", ""))
            row = {"chosen": chosen, "rejected": rejected} if chosen and rejected and chosen != rejected else None
        if row is None:
            skipped += 1
            continue
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    write_jsonl(out, rows)
    return {"out": str(out), "rows": len(rows), "skipped": skipped}


# ---------------------------------------------------------------- the measured TRL run

def rss_mb() -> float:
    """Current resident set size of this process, MB (from /proc; 0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class CountingCollator:
    """Wraps the trainer's collator and records what each batch it hands out contains.

    Per batch, not summed: the dataloader collates one batch ahead of the step that uses it, so
    only the first `global_step` batches were trained on (`totals`).
    """

    def __init__(self, inner, paired: bool):
        self.inner, self.paired = inner, paired
        self.batches: list[dict] = []

    def __call__(self, examples):
        batch = self.inner(examples)
        ids = batch["input_ids"]  # (N, T); padding-free packing: (1, total)
        mask = batch.get("attention_mask")
        packed = "position_ids" in batch and mask is None
        self.batches.append({
            "tokens": int(mask.sum()) if mask is not None else ids.numel(),
            "loss_tokens": int((batch["labels"] != -100).sum()) if "labels" in batch else 0,
            # packed rows: an example starts wherever its position id is 0
            "sequences": int((batch["position_ids"] == 0).sum()) if packed else ids.shape[0],
            "pairs": ids.shape[0] // 2 if self.paired else 0,  # chosen rows, then rejected rows
        })
        return batch

    def totals(self, steps: int) -> dict:
        used = self.batches[:steps]
        return {k: sum(b[k] for b in used) for k in ("tokens", "loss_tokens", "sequences", "pairs")}


def step_timer():
    """A TrainerCallback recording each optimizer step's wall time (s): the first steps warm the allocator up."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def timed_dpo_trainer():
    """trl.DPOTrainer timing its reference pass: with precompute_ref_log_probs, TRL 1.16 runs it inside
    __init__, so trainer.train() (train_time_s) never sees it and it has to be timed on its own."""
    import trl

    class TimedDPOTrainer(trl.DPOTrainer):
        ref_precompute_s = 0.0

        def _precompute_ref_logps(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*args, **kwargs)
            finally:
                self.ref_precompute_s += time.perf_counter() - t0

    return TimedDPOTrainer


def sft_rows(rows: list[dict], loss: str, path: Path) -> list[dict]:
    """{"messages"} rows as TRL wants them: prompt / completion (loss on the last assistant turn) or messages."""
    out = []
    for i, row in enumerate(rows, 1):
        msgs = row.get("messages")
        if not msgs or msgs[-1].get("role") != "assistant":
            sys.exit(f"error: {path}:{i}: need {{\"messages\": [...]}} ending with an assistant message")
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:]} if loss == "completion" else {"messages": msgs})
    return out


def reward_rows(rows: list[dict], path: Path) -> list[dict]:
    """{"chosen": [msgs], "rejected": [msgs]}: TRL's conversational, implicit-prompt preference format, as is
    (RewardTrainer and DPOTrainer both extract the shared prompt themselves)."""
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("chosen"), list) or not isinstance(row.get("rejected"), list):
            sys.exit(f"error: {path}:{i}: need {{\"chosen\": [messages], \"rejected\": [messages]}}")
    return [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def train(args) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)  # before the model: the reward head is initialised at load time
    reward, dpo = args.mode == "reward", args.mode == "dpo"
    rows = read_records(args.data)
    if args.max_records:
        rows = rows[: args.max_records]
    rows = reward_rows(rows, args.data) if reward or dpo else sft_rows(rows, args.loss, args.data)
    dataset = Dataset.from_list(rows)

    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    if tok.pad_token is None:
        sys.exit(f"error: {args.model}: the tokenizer has no pad token")
    if reward:
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, num_labels=1, dtype=torch.float32, local_files_only=True)
        model.config.pad_token_id = tok.pad_token_id  # the score is read at the last non-pad token
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)

    peft_config = None
    if args.lora:
        from peft import LoraConfig
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=args.target_modules.split(","),
                                 task_type="SEQ_CLS" if reward else "CAUSAL_LM")  # SEQ_CLS keeps the score head trainable
    lr = args.lr if args.lr is not None else (2e-4 if args.lora else 2e-5)

    out_dir = tempfile.mkdtemp(prefix="trl_side.")  # TrainingArguments wants one; nothing is saved into it
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    common = dict(
        output_dir=out_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=lr, seed=args.seed, data_seed=args.seed,
        use_cpu=True, bf16=False, fp16=False,  # fp32 (TRL defaults bf16 to True)
        gradient_checkpointing=args.gradient_checkpointing,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
        log_level="error", dataloader_num_workers=0, max_length=args.max_length,
    )
    t_init = time.perf_counter()
    if reward:
        config = trl.RewardConfig(**common)
        trainer = trl.RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                                    peft_config=peft_config)
    elif dpo:
        # disable_dropout=False: TRL's default zeroes every dropout, the LoRA adapter's too; gristmill's dpo
        # trains with lora.dropout, so both sides do the same work
        config = trl.DPOConfig(beta=args.beta, loss_type=["sigmoid"], precompute_ref_log_probs=args.precompute_ref,
                               disable_dropout=False, **common)
        trainer = timed_dpo_trainer()(model=model, args=config, train_dataset=dataset, processing_class=tok,
                                      peft_config=peft_config)
    else:
        config = trl.SFTConfig(packing=args.packing, **common)
        trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                                 peft_config=peft_config)
    # Wrapped after construction: SFTTrainer refuses a custom collator when packing (padding-free), and
    # the dataloader built inside train() takes whatever trainer.data_collator is then.
    init_time = time.perf_counter() - t_init
    counter = CountingCollator(trainer.data_collator, paired=reward or dpo)
    trainer.data_collator = counter
    timer = step_timer()
    trainer.add_callback(timer)

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    rss_before = rss_mb()
    t0 = time.perf_counter()
    result = trainer.train()
    train_time = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    n = counter.totals(trainer.state.global_step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MB
    return {
        "peer": "trl", "trl_version": trl.__version__, "mode": args.mode, "model": str(args.model),
        "steps": trainer.state.global_step, "batch_size": args.batch_size, "max_length": args.max_length,
        "lora": args.lora, "packing": bool(args.packing and args.mode == "sft"),
        "loss_on": args.loss if args.mode == "sft" else None,
        "gradient_checkpointing": args.gradient_checkpointing, "lr": lr,
        "train_time_s": round(train_time, 3), "train_runtime_s": round(result.metrics.get("train_runtime", float("nan")), 3),
        "tokens": n["tokens"], "loss_tokens": n["loss_tokens"] if args.mode == "sft" else None,
        "sequences": n["sequences"], "pairs": n["pairs"] if reward or dpo else None,
        "tokens_per_s": round(n["tokens"] / train_time, 1),
        "pairs_per_s": round(n["pairs"] / train_time, 3) if reward or dpo else None,
        "seconds_per_step": round(train_time / max(trainer.state.global_step, 1), 4),
        "init_time_s": round(init_time, 3),
        "precompute_ref": args.precompute_ref if dpo else None,
        "ref_precompute_s": round(trainer.ref_precompute_s, 3) if dpo else None,
        "step_times_s": [round(t, 2) for t in timer.times],
        "peak_rss_mb": round(peak, 1), "rss_before_train_mb": round(rss_before, 1),
        "final_loss": losses[-1] if losses else None, "mean_loss": result.training_loss,
        "trainable_params": trainable, "dataset_rows": len(rows), "threads": args.threads,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "seconds_total": round(time.perf_counter() - t_start, 1),
    }


# ---------------------------------------------------------------- the loss check

def stand_in_dpo_trainer(beta: float):
    """What DPOTrainer._compute_loss reads from `self`, set as DPOTrainer.__init__ sets it from a real
    DPOConfig (sigmoid loss, reference log-probs precomputed: read from the batch), on CPU, one process."""
    import torch
    import trl

    out_dir = tempfile.mkdtemp(prefix="trl_side.")
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    cfg = trl.DPOConfig(output_dir=out_dir, beta=beta, loss_type=["sigmoid"], precompute_ref_log_probs=True,
                        use_cpu=True, bf16=False, report_to="none")
    same = SimpleNamespace(gather_for_metrics=lambda t: t, gather=lambda t: t, device=torch.device("cpu"))
    return SimpleNamespace(
        args=cfg, beta=cfg.beta, precompute_ref_logps=cfg.precompute_ref_log_probs, loss_types=cfg.loss_type,
        loss_weights=cfg.loss_weights or [1.0] * len(cfg.loss_type), ld_alpha=cfg.ld_alpha,
        f_divergence_type=cfg.f_divergence_type, f_alpha_divergence_coef=cfg.f_alpha_divergence_coef,
        label_smoothing=cfg.label_smoothing, use_weighting=cfg.use_weighting, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        model=SimpleNamespace(training=True), accelerator=same)


def one_pair(policy, ref):
    """A stand-in model and batch for one pair: rows [chosen, rejected] of two tokens, the second one the
    completion, whose per-token log-prob is the whole sequence log-prob (TRL sums them: one term, exact)."""
    import torch

    outputs = SimpleNamespace(log_probs=policy.view(2, 1), entropy=torch.zeros(2, 1),
                              mean_logits=torch.zeros(2, 1), is_top1=torch.zeros(2, 1, dtype=torch.bool))
    batch = {"input_ids": torch.zeros(2, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2, dtype=torch.long),
             "completion_mask": torch.tensor([[0, 1], [0, 1]]),
             "ref_chosen_logps": ref[0].view(1), "ref_rejected_logps": ref[1].view(1)}
    return (lambda **kwargs: outputs), batch


def check_dpo_loss(pairs: int, betas: list[float], seed: int) -> dict:
    """gristmill's dpo_loss vs TRL's sigmoid loss on the same fixed random log-probs: the largest |difference|.

    TRL 1.16 has no loss function of its own to call: the sigmoid loss sits inside DPOTrainer._compute_loss
    (model, inputs), between the policy forward and the metrics. It is called unbound on a stand-in trainer
    and model, one pair per call, since it returns the batch mean and the comparison is per pair."""
    import torch
    import trl

    from gristmill.align.losses import dpo_loss

    g = torch.Generator().manual_seed(seed)
    policy = -400 * torch.rand(2, pairs, generator=g)  # sequence log-prob sums, rows chosen / rejected
    ref = policy + 20 * torch.randn(2, pairs, generator=g)  # beta * h reaches the sigmoid's flat tails
    worst = 0.0
    for beta in betas:
        ours = dpo_loss(policy[0], policy[1], ref[0], ref[1], beta=beta)
        trainer = stand_in_dpo_trainer(beta)
        theirs = torch.stack([trl.DPOTrainer._compute_loss(trainer, *one_pair(policy[:, i], ref[:, i]), False)
                              for i in range(pairs)])
        worst = max(worst, (ours - theirs).abs().max().item())
    return {"max_abs_diff": worst, "pairs": pairs, "betas": betas, "trl_version": trl.__version__,
            "trl_code": "DPOTrainer._compute_loss, loss_type sigmoid"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for kind in ("sft", "hh"):
        p = sub.add_parser(f"prepare-{kind}", help=f"convert {'Alpaca' if kind == 'sft' else 'Anthropic HH'} data")
        p.add_argument("src", type=Path)
        p.add_argument("out", type=Path)
        p.add_argument("--limit", type=int, help="keep the first N usable records")
    p = sub.add_parser("check-dpo-loss", help="gristmill's dpo_loss vs TRL's sigmoid loss on fixed log-probs")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5])
    p.add_argument("--seed", type=int, default=0)
    for mode in ("sft", "reward", "dpo"):
        p = sub.add_parser(mode, help=f"one measured TRL {mode} run")
        p.add_argument("--model", type=Path, required=True, help="a local Hugging Face causal-LM folder")
        p.add_argument("--data", type=Path, required=True, help="JSONL (see the module docstring)")
        p.add_argument("--max-records", type=int, help="read only the first N rows of --data")
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=4)
        p.add_argument("--max-length", type=int, default=512)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--lora", dest="lora", action="store_true", default=True)
        g.add_argument("--full", dest="lora", action="store_false")
        p.add_argument("--lora-r", type=int, default=16)
        p.add_argument("--lora-alpha", type=int, default=32)
        p.add_argument("--lora-dropout", type=float, default=0.05)
        p.add_argument("--target-modules", default=LORA_TARGETS)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=False)
        p.add_argument("--loss", choices=("completion", "all"), default="completion")
        p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        if mode == "dpo":
            p.add_argument("--beta", type=float, default=0.1)
            p.add_argument("--precompute-ref", action=argparse.BooleanOptionalAction, default=False)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode.startswith("prepare-"):
        print(json.dumps(prepare("sft" if args.mode == "prepare-sft" else "hh", args.src, args.out, args.limit)))
        return
    if args.mode in ("reward", "dpo") and args.packing:
        sys.exit("error: --packing is for sft only")
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the trainers' prints must not mix with the one JSON line
        if args.mode == "check-dpo-loss":
            result = check_dpo_loss(args.pairs, args.betas, args.seed)
        else:
            result = train(args)
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
