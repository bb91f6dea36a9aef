"""TRL's side of the align benchmark: one SFTTrainer, RewardTrainer, DPOTrainer, GRPOTrainer or PPOTrainer run on CPU in fp32, measured, printed as one JSON line.

Run with the benchmark venv (TRL is never a dependency of gristmill: `bash benchmarks/setup_bench_env.sh`);
`ppo` with .venv-bench-ppo (`bash benchmarks/setup_bench_ppo_env.sh`: TRL 1.12.0, the last release with
trl.experimental.ppo.PPOTrainer). benchmarks/bench_align.py calls it as a subprocess; this command line is stable:

    python trl_side.py sft    --model DIR --data FILE [options]   # FILE: JSONL rows {"messages": [{role, content}, ...]}
    python trl_side.py reward --model DIR --data FILE [options]   # FILE: JSONL rows {"chosen": [msgs], "rejected": [msgs]}
    python trl_side.py dpo    --model DIR --data FILE [options]   # FILE: as for reward
    python trl_side.py grpo   --model DIR --reward-model DIR --data FILE [rl options]   # FILE: rows {"prompt": [msgs]}
    python trl_side.py ppo    --model DIR --reward-model DIR --data FILE [rl options]   # (.venv-bench-ppo)
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

RL options (grpo, ppo), in gristmill's ppo-stage terms; one of its iterations = P prompts x K samples = S responses,
ppo_epochs passes over them in minibatches of M, so S / M x ppo_epochs optimizer updates:
    --prompts-per-iteration P (4)  --samples K (grpo 4; ppo 1)  --minibatch M (0 = S)  --ppo-epochs E (1)
    --warmup W (1) --iterations N (3)   W + N iterations run; the first W are left out of the timing
    --max-new-tokens T (32) --temperature (1.0) --kl-coef (0.05: GRPO's beta, PPO's kl_coef) --clip (0.2)
    --lr (1e-4, constant) --max-grad-norm (1.0) --lora-r/--lora-alpha/--lora-dropout/--target-modules (as above)
    ppo only: --vf-coef (0.5) --missing-eos-penalty (1.0) --value-lora | --no-value-lora
  The prompts are used in file order (GRPO: shuffle_dataset off; PPO: its shuffling dataloader replaced by one in
  order), the first P x (W + N) of them; bench_align.py writes them in the order gristmill's stage visits them.
  grpo: GRPOTrainer with per_device_train_batch_size M, gradient accumulation 1, steps_per_generation S / M,
    num_generations K, num_iterations E, max_completion_length T, loss_type dapo (every completion token of an
    update weighs the same: gristmill's loss_average=token), scale_rewards group, top-p 1, top-k 0, dropout
    off (gristmill's policy runs in eval mode), no vLLM, gradient checkpointing off (TRL defaults it on); the
    reward function is the reward model itself (AutoModelForSequenceClassification, its own tokenizer). One
    iteration = S / M x E optimizer steps, each timed from on_step_begin to on_step_end (the generation runs
    inside the first: _prepare_inputs); model loading and trainer construction are outside.
  ppo: trl.experimental.ppo.PPOTrainer with per_device_train_batch_size P, gradient accumulation 1, one minibatch
    (M = S only), num_ppo_epochs E, response_length T, stop_token eos, the reference = the policy with its
    adapter off, the value model = the reward model (InstructGPT's init, as gristmill's) with LoRA adapters and
    its score head trained (--no-value-lora: TRL's default, every weight trained), a second copy of the reward
    model to score. One iteration = one of its updates, timed between consecutive on_step_end calls (its own
    loop calls no on_step_begin).
  The split of an iteration: generate (GRPO: _generate, with tokenising and decoding; PPO: batch_generation),
  reward (the reward model), forward (GRPO: the rest of _generate_and_score_completions, the reference
  log-probs; PPO: the reference and value passes), update (the rest: loss, backward, optimizer, logging).

RL output: {"peer", "trl_version", "mode", "P", "K", "S", "M", "steps_per_iteration", "iterations" (W + N),
    "warmup", "iteration_times_s" (each), "seconds_per_iteration" (mean of the timed ones), "split_s" (their mean
    generate / reward / forward / update), "response_tokens" (mean per response, each iteration, through the
    stop token), "generate_tokens_per_s" (timed iterations), "init_time_s", "peak_rss_mb", "trainable_params",
    grpo: "old_logps_forward" (whether TRL ran a separate old-log-prob pass); ppo: "value_lora",
    "generated_width" (tokens generated per row in each iteration: T unless every row stopped)}

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


# ---------------------------------------------------------------- the RL runs (grpo, ppo)

def rl_sizes(args) -> dict:
    """One of gristmill's ppo iterations in TRL's units: S = prompts x samples responses per iteration, M per
    optimizer update, ppo_epochs passes, so S / M x ppo_epochs optimizer steps per iteration."""
    P, K = args.prompts_per_iteration, args.samples
    S = P * K
    M = args.minibatch or S
    if S % M or M % K:
        sys.exit(f"error: minibatch {M} must divide prompts x samples = {S} and be a multiple of samples {K}")
    n_iter = args.warmup + args.iterations
    return {"P": P, "K": K, "S": S, "M": M, "n_iter": n_iter, "steps_per_iteration": S // M * args.ppo_epochs}


def rl_prompts(args, need: int) -> list[list[dict]]:
    """The first `need` rows of --data ({"prompt": [messages ending with a user turn]}), in file order: the
    order gristmill's ppo stage visits them (benchmarks/bench_align.py writes the file that way)."""
    rows = read_records(args.data)
    if len(rows) < need:
        sys.exit(f"error: {args.data}: {len(rows)} prompts, {need} needed ({need // args.prompts_per_iteration} "
                 f"iterations x {args.prompts_per_iteration} prompts)")
    return [r["prompt"] for r in rows[:need]]


def lora_config(args, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.target_modules.split(","), task_type=task_type)


def reward_model(path: Path):
    """The reward model (AutoModelForSequenceClassification, fp32) and its tokenizer, the score read at the
    last non-pad token."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                               local_files_only=True)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


class Stopwatch:
    """Seconds spent in named parts of the code, one list entry per call, and in `wrap`ped functions."""

    def __init__(self):
        self.calls: dict[str, list[float]] = defaultdict(list)

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.calls[name].append(time.perf_counter() - t0)
        return timed


def interval_timer():
    """A TrainerCallback recording the wall time between consecutive on_step_end calls (the first from
    on_train_begin): PPOTrainer's own loop calls on_step_end once per rollout batch and no on_step_begin."""
    from transformers import TrainerCallback

    class IntervalTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            self.times.append(now - self.t)
            self.t = now

    return IntervalTimer()


def per_iteration(step_times: list[float], n: int) -> list[float]:
    """Optimizer-step times summed into iterations of n steps."""
    return [sum(step_times[i:i + n]) for i in range(0, len(step_times) - n + 1, n)]


def rl_result(args, trl_version: str, sz: dict, iter_times: list[float], parts: dict[str, list[float]],
              tokens: list[int], extra: dict, t_start: float, init_time: float, rss_before: float) -> dict:
    """The JSON line of a grpo / ppo run: per-iteration times, the timed iterations' mean and its split."""
    w = args.warmup
    timed = iter_times[w:]
    if not timed:
        sys.exit(f"error: {len(iter_times)} iterations ran, {w} of them warm-up: none left to time")
    n = len(timed)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    split = {k: round(mean(v[w:w + n]), 3) for k, v in parts.items()}
    split["update"] = round(mean(timed) - sum(split.values()), 3)  # the rest of the iteration
    gen_tokens = sum(tokens[w:w + n])
    return {
        "peer": "trl", "trl_version": trl_version, "mode": args.mode, "model": str(args.model),
        "reward_model": str(args.reward_model), **{k: sz[k] for k in ("P", "K", "S", "M", "steps_per_iteration")},
        "iterations": len(iter_times), "warmup": w, "ppo_epochs": args.ppo_epochs,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "kl_coef": args.kl_coef,
        "lr": args.lr, "iteration_times_s": [round(t, 3) for t in iter_times],
        "seconds_per_iteration": round(mean(timed), 3), "split_s": split,
        "response_tokens": [t / sz["S"] for t in tokens],  # mean per response, each iteration
        "generate_tokens_per_s": round(gen_tokens / sum(parts["generate"][w:w + n]), 2),
        "init_time_s": round(init_time, 3), "rss_before_train_mb": round(rss_before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads, "seconds_total": round(time.perf_counter() - t_start, 1), **extra,
    }


def train_grpo(args) -> dict:
    """trl.GRPOTrainer, one of gristmill's iterations per S / M x ppo_epochs optimizer steps: the trainer generates
    S = P x K completions (num_generations = K) once per steps_per_generation (S / M) x num_iterations
    (ppo_epochs) steps, and each step is one optimizer update on M of them (gradient accumulation 1)."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    sz = rl_sizes(args)
    prompts = rl_prompts(args, sz["P"] * sz["n_iter"])
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    rm, rm_tok = reward_model(args.reward_model)

    watch = Stopwatch()
    tokens: list[int] = []

    class TimedGRPOTrainer(trl.GRPOTrainer):
        """Times generation (tokenising, generate, decoding), the reward model, and the whole rollout (those two
        plus the reference log-probs): one call each per generated batch, that is per iteration."""

        def _generate(self, *a, **kw):
            return watch.wrap("generate", super()._generate)(*a, **kw)

        def _calculate_rewards(self, *a, **kw):
            return watch.wrap("reward", super()._calculate_rewards)(*a, **kw)

        def _generate_and_score_completions(self, *a, **kw):
            out = watch.wrap("rollout", super()._generate_and_score_completions)(*a, **kw)
            tokens.append(int(out["completion_mask"].sum()))
            return out

    out_dir = tempfile.mkdtemp(prefix="trl_side.")
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    config = trl.GRPOConfig(
        output_dir=out_dir, max_steps=sz["n_iter"] * sz["steps_per_iteration"],
        per_device_train_batch_size=sz["M"], gradient_accumulation_steps=1, steps_per_generation=sz["S"] // sz["M"],
        num_generations=sz["K"], num_iterations=args.ppo_epochs, max_completion_length=args.max_new_tokens,
        temperature=args.temperature, top_p=1.0, top_k=0, beta=args.kl_coef, epsilon=args.clip,
        loss_type="dapo",  # every completion token of the update weighs the same: gristmill's loss_average=token
        scale_rewards="group", learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=args.max_grad_norm, disable_dropout=True,  # gristmill's policy runs in eval mode throughout
        shuffle_dataset=False,  # the prompts in file order: gristmill's order, so each iteration gets the same ones
        use_vllm=False, log_completions=False, seed=args.seed, data_seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing,  # TRL defaults it on; gristmill's ppo has none
        use_cpu=True, bf16=False, fp16=False, eval_strategy="no", save_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True, log_level="error", dataloader_num_workers=0,
    )
    t_init = time.perf_counter()
    trainer = TimedGRPOTrainer(model=model, reward_funcs=rm, args=config, train_dataset=dataset, processing_class=tok,
                               reward_processing_classes=rm_tok, peft_config=lora_config(args, "CAUSAL_LM"))
    init_time = time.perf_counter() - t_init
    timer = step_timer()
    trainer.add_callback(timer)
    rss_before = rss_mb()
    trainer.train()
    iters = per_iteration(timer.times, sz["steps_per_iteration"])
    rollout, gen, rew = (watch.calls[k] for k in ("rollout", "generate", "reward"))
    parts = {"generate": gen, "reward": rew, "forward": [r - g - w for r, g, w in zip(rollout, gen, rew)]}
    return rl_result(args, trl.__version__, sz, iters, parts, tokens,
                     {"trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                      "old_logps_forward": trainer.args.gradient_accumulation_steps % (
                          trainer.args.steps_per_generation * trainer.num_iterations) != 0},
                     t_start, init_time, rss_before)


def train_ppo(args) -> dict:
    """trl.experimental.ppo.PPOTrainer (TRL <= 1.12), one rollout batch of P prompts per iteration: per_device_train
    _batch_size = P, gradient accumulation 1, one minibatch (the whole batch), num_ppo_epochs passes; so one of its
    updates (num_total_batches) is one of gristmill's iterations. Its dataloader shuffles; it is replaced by one
    in file order (gristmill's order)."""
    import torch
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorWithPadding, set_seed

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_mod

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    if args.samples != 1:
        sys.exit("error: ppo samples one response per prompt (--samples 1)")
    sz = rl_sizes(args)
    if sz["M"] != sz["S"]:
        sys.exit("error: TRL's PPOTrainer side supports minibatch = the whole batch only (its micro-batches and "
                 "gradient accumulation do not give one optimizer update per minibatch)")
    prompts = rl_prompts(args, sz["P"] * sz["n_iter"])
    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    tok.padding_side = "left"  # PPOTrainer generates from the collated (left-padded) prompts
    ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
           for p in prompts]
    dataset = Dataset.from_list([{"input_ids": list(x)} for x in ids])
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    rm, _ = reward_model(args.reward_model)
    value, _ = reward_model(args.reward_model)  # InstructGPT's value init (gristmill's too): the reward model
    if args.value_lora:  # gristmill's value model: LoRA adapters and the score head trained, the base frozen
        from peft import get_peft_model

        value = get_peft_model(value, lora_config(args, "SEQ_CLS")).base_model.model

    watch = Stopwatch()
    tokens: list[int] = []
    widths: list[int] = []
    inner_generation, inner_forward, inner_reward = ppo_mod.batch_generation, ppo_mod.forward, ppo_mod.get_reward

    def batch_generation(model, queries, *a, **kw):
        query_responses, logits = watch.wrap("generate", inner_generation)(model, queries, *a, **kw)
        resp = query_responses[:, queries.shape[1]:]
        # tokens through the first stop token (what PPOTrainer scores), or every generated token without one
        stop = (resp == tok.eos_token_id).int()
        ends = torch.where(stop.any(1), stop.argmax(1) + 1, torch.full_like(stop[:, 0], resp.shape[1]))
        tokens.append(int(ends.sum()))
        widths.append(resp.shape[1])
        return query_responses, logits

    def forward(model, *a, **kw):  # the reference pass (policy, adapters off) is timed; the update's is the rest
        if isinstance(getattr(model, "module", model), ppo_mod.PolicyAndValueWrapper):
            return inner_forward(model, *a, **kw)
        return watch.wrap("forward", inner_forward)(model, *a, **kw)

    def get_reward(model, *a, **kw):  # the value model's pass is a forward, the reward model's the reward
        return watch.wrap("reward" if model is rm else "forward", inner_reward)(model, *a, **kw)

    ppo_mod.batch_generation, ppo_mod.forward, ppo_mod.get_reward = batch_generation, forward, get_reward

    out_dir = tempfile.mkdtemp(prefix="trl_side.")
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    config = PPOConfig(
        output_dir=out_dir, per_device_train_batch_size=sz["P"], gradient_accumulation_steps=1, num_mini_batches=1,
        num_ppo_epochs=args.ppo_epochs, total_episodes=sz["P"] * sz["n_iter"],
        local_rollout_forward_batch_size=sz["P"], response_length=args.max_new_tokens, temperature=args.temperature,
        stop_token="eos", missing_eos_penalty=args.missing_eos_penalty, kl_coef=args.kl_coef, kl_estimator="k1",
        cliprange=args.clip, cliprange_value=args.clip, vf_coef=args.vf_coef, gamma=1.0, lam=0.95,
        whiten_rewards=False, num_sample_generations=0, learning_rate=args.lr, lr_scheduler_type="constant",
        weight_decay=0.0, seed=args.seed, data_seed=args.seed, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=args.gradient_checkpointing,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
        log_level="error", dataloader_num_workers=0,
    )
    t_init = time.perf_counter()
    trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=None, reward_model=rm,
                         train_dataset=dataset, value_model=value, peft_config=lora_config(args, "CAUSAL_LM"))
    trainer.dataloader = DataLoader(dataset, batch_size=sz["P"], shuffle=False, drop_last=True,
                                    collate_fn=DataCollatorWithPadding(tok))
    init_time = time.perf_counter() - t_init
    timer = interval_timer()
    trainer.add_callback(timer)
    rss_before = rss_mb()
    trainer.train()
    # per iteration: one generation call, one reward call, and two forward calls (reference, value)
    per = {"generate": 1, "reward": 1, "forward": 2}
    parts = {k: per_iteration(watch.calls[k], n) for k, n in per.items()}
    return rl_result(args, trl.__version__, sz, timer.times, parts, tokens,
                     {"trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                      "value_lora": args.value_lora, "generated_width": widths},
                     t_start, init_time, rss_before)


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
    for mode in ("grpo", "ppo"):
        p = sub.add_parser(mode, help=f"one measured TRL {'GRPOTrainer' if mode == 'grpo' else 'PPOTrainer'} run")
        p.add_argument("--model", type=Path, required=True, help="the policy: a local Hugging Face causal-LM folder")
        p.add_argument("--reward-model", type=Path, required=True, help="a local HF sequence-classifier folder")
        p.add_argument("--data", type=Path, required=True, help='JSONL rows {"prompt": [messages]}, in visiting order')
        p.add_argument("--prompts-per-iteration", type=int, default=4)
        p.add_argument("--samples", type=int, default=4 if mode == "grpo" else 1)
        p.add_argument("--minibatch", type=int, default=0, help="responses per optimizer update; 0 = the whole batch")
        p.add_argument("--ppo-epochs", type=int, default=1)
        p.add_argument("--iterations", type=int, default=3, help="timed iterations, after the warm-up ones")
        p.add_argument("--warmup", type=int, default=1, help="iterations run first and left out of the timing")
        p.add_argument("--max-new-tokens", type=int, default=32)
        p.add_argument("--temperature", type=float, default=1.0)
        p.add_argument("--kl-coef", type=float, default=0.05)
        p.add_argument("--clip", type=float, default=0.2)
        p.add_argument("--lr", type=float, default=1e-4)
        p.add_argument("--max-grad-norm", type=float, default=1.0)
        p.add_argument("--lora-r", type=int, default=16)
        p.add_argument("--lora-alpha", type=int, default=32)
        p.add_argument("--lora-dropout", type=float, default=0.05)
        p.add_argument("--target-modules", default=LORA_TARGETS)
        p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        if mode == "ppo":
            p.add_argument("--vf-coef", type=float, default=0.5)
            p.add_argument("--missing-eos-penalty", type=float, default=1.0)
            p.add_argument("--value-lora", action=argparse.BooleanOptionalAction, default=True)
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
        elif args.mode in ("grpo", "ppo"):
            result = train_grpo(args) if args.mode == "grpo" else train_ppo(args)
        else:
            result = train(args)
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
