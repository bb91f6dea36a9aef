"""The supervised training loop (pretrain, SFT, reward, DPO): AdamW steps on a warmup-cosine LR, spike checks, rollback, evaluation, metrics, checkpoints.

Read `train` top to bottom: resume or start, then per step set the LR, run the micro-batches, scale the
summed gradients to a mean over every supervised unit, clip, ask the spike detector, step or skip or roll
back, and log / evaluate / checkpoint (the pieces are `trainer.Trainer`'s, which PPO drives too). What is
trained on and how the loss is computed come from the stage: a batch source (`micro_batches(cursor)`,
`global_batch`) and a loss function returning (loss summed over units, number of units) for one
micro-batch - tokens for pretrain and SFT, pairs for the reward model. The loop evaluates with that same
loss function on the stage's held-out batches.
Steps are counted 1-based in everything a user sees: "step 40" is the 40th optimizer update, and
checkpoint step-00000040 holds the state after it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from gristmill.train.config import LoopConfig
from gristmill.train.metrics import mfu
from gristmill.train.parallel import Parallel
from gristmill.train.spikes import SpikeError, spike_event
from gristmill.train.trainer import Hooks, LoopState, LossFn, Trainer

__all__ = ["BatchSource", "Hooks", "LoopState", "TrainResult", "train"]


class BatchSource(Protocol):
    global_batch: int  # cursor positions one optimizer step consumes, over all ranks

    def micro_batches(self, cursor: int) -> list[Any]:
        """This rank's micro-batches for the step that starts at `cursor`: a pure function of (cursor, rank)."""


@dataclass
class TrainResult:
    state: LoopState
    final_train_loss: float | None  # mean of the last (up to) 10 accepted step losses
    resumed_from: int | None  # checkpoint step this process started from, None for a fresh start
    steps_run: int  # optimizer steps this process executed (replays after a rollback included)
    loop_time_s: float  # wall time of the step loop, evaluation and checkpoints included
    units_per_s: float | None  # training throughput of this process's steps (all ranks), evaluation excluded
    compute_s: float  # wall time of this process's steps alone (no evaluation, no checkpoints)
    mfu: float | None
    peak_memory_mb: float  # CUDA max allocated on GPU, max RSS of the process on CPU


def train(cfg: LoopConfig, model: torch.nn.Module, forward: torch.nn.Module, par: Parallel, batches: BatchSource,
          loss_fn: LossFn, *, out_dir: Path, run_id: str, stage: str, max_steps: int,
          eval_batches: list[Any] | None = None, steps_per_epoch: int | None = None, unit: str = "tokens",
          flops_per_unit: float | None = None, peak_flops: float | None = None,
          hooks: Hooks | None = None) -> TrainResult:
    """Train `model` (called through `forward`: itself, a scorer around it, compiled, DDP or FSDP) for
    `max_steps` steps with the loop settings `cfg`.

    `eval_batches` (this rank's held-out micro-batches) are scored by `loss_fn` every cfg.eval_every steps
    (0: every `steps_per_epoch`, or only at the end) and at the end; the metrics are logged as eval_<name>.
    Resumes from the newest checkpoint in out_dir/checkpoints written by this run (`run_id`),
    else starts at step 0 and saves a step-0 checkpoint as the first rollback target.
    """
    from gristmill.train.memory import peak_memory_mb

    t = Trainer(cfg, model, forward, par, out_dir=out_dir, run_id=run_id, stage=stage, max_steps=max_steps,
                hooks=hooks)
    hooks = t.hooks
    eval_every = cfg.eval_every or steps_per_epoch or 0
    resumed_from = t.start()
    st, log, G = t.state, t.log, batches.global_batch
    bar = tqdm(total=max_steps, initial=st.step, desc=stage, unit="step", disable=not par.main,
               dynamic_ncols=True, mininterval=1.0)
    steps_run, units_run, compute_s = 0, 0, 0.0
    t_start = time.perf_counter()
    forward.train()
    try:
        while st.step < max_steps:
            n = st.step + 1  # the step being taken, 1-based
            t0 = time.perf_counter()
            lr = t.set_lr()
            micro = hooks.batches(n, batches.micro_batches(st.cursor), t.detector.rollbacks)
            u = t.update(n, micro, loss_fn)
            verdict = u.verdict
            dt = time.perf_counter() - t0
            steps_run, units_run, compute_s = steps_run + 1, units_run + u.units, compute_s + dt
            row: dict[str, Any] = {"step": n, "loss": u.loss, "lr": lr, "grad_norm": u.grad_norm,
                                   f"{unit}_per_s": u.units / dt}
            row |= {f"train_{k}": v for k, v in u.stats.items()}
            if verdict.action != "ok":
                event = spike_event(n, verdict, u.loss, u.grad_norm)
                st.events.append(event)
                row |= {"action": verdict.action, "reason": verdict.reason, "event": event}
                if par.main:
                    tqdm.write(f"{stage}: step {n}: spike ({verdict.reason}) -> {verdict.action}")
            if verdict.action == "stop":
                log.write(row)
                raise SpikeError(
                    f"{stage}: step {n}: {verdict.reason}; already rolled back {t.detector.rollbacks} times "
                    f"({stage}.spike.max_rollbacks={cfg.spike.max_rollbacks}), so training stops here. The last good "
                    f"checkpoints are in {t.ckpt_dir}. Lower {stage}.optim.lr, lengthen {stage}.optim.warmup_steps, "
                    f"or raise {stage}.spike.max_rollbacks.")
            if verdict.action == "rollback":
                # back to the newest checkpoint; its data through this step's batch (+ margin) is skipped
                event |= t.rollback(skip_to=st.cursor + G * (1 + cfg.spike.margin_steps))
                log.write(row)
                bar.n = st.step
                bar.refresh()
                continue

            # the step is done (updated, or skipped: then its data still counts as consumed)
            st.step, st.cursor = n, st.cursor + G
            if verdict.action == "ok":
                st.seen += u.units
            if eval_batches is not None and ((eval_every and n % eval_every == 0) or n == max_steps):
                st.evals = t.evaluate(eval_batches, loss_fn)
                row |= st.evals
            if flops_per_unit and (x := mfu(row[f"{unit}_per_s"], flops_per_unit, peak_flops, par.world_size)):
                row["mfu"] = x
            if n % cfg.log_every == 0 or n == max_steps or st.evals.keys() & row.keys() or "action" in row:
                log.write(row | {unit: st.seen, "time_s": time.perf_counter() - t_start})
            bar.set_postfix(loss=f"{u.loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if n % cfg.checkpoint.every == 0 or n == max_steps:
                t.save()
            hooks.after_step(n)
    finally:
        bar.close()
        t.close()

    loop_time = time.perf_counter() - t_start
    recent = t.detector.losses[-10:]
    ups = units_run / compute_s if compute_s > 0 else None
    return TrainResult(state=st, final_train_loss=sum(recent) / len(recent) if recent else None,
                       resumed_from=resumed_from, steps_run=steps_run, loop_time_s=loop_time, units_per_s=ups,
                       compute_s=compute_s,
                       mfu=mfu(ups, flops_per_unit, peak_flops, par.world_size) if (ups and flops_per_unit) else None,
                       peak_memory_mb=peak_memory_mb(par.device))
