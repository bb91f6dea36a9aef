"""The training loop: AdamW steps on a warmup-cosine LR, with spike checks, rollback, evaluation, metrics and checkpoints.

Read `train` top to bottom: resume or start, then per step set the LR, run the micro-batches,
clip, ask the spike detector, step or skip or roll back, and log / evaluate / checkpoint.
Steps are counted 1-based in everything a user sees: "step 40" is the 40th optimizer update, and
checkpoint step-00000040 holds the state after it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from gristmill.manifests import atomic_write_text
from gristmill.pretrain import parallel
from gristmill.pretrain.checkpoint import (capture_rng, list_checkpoints, load_checkpoint, read_state, restore_rng,
                                           save_checkpoint)
from gristmill.pretrain.config import PretrainConfig
from gristmill.pretrain.data import TrainBatches
from gristmill.pretrain.evaluate import autocast_for, causal_lm_loss, mfu, validation_loss
from gristmill.pretrain.parallel import Parallel
from gristmill.pretrain.schedule import lr_at
from gristmill.pretrain.spikes import SpikeDetector, SpikeError, SpikeSettings, Verdict


@dataclass
class LoopState:
    """What a checkpoint holds besides weights, optimizer and RNG (all JSON)."""

    step: int = 0  # optimizer steps completed
    cursor: int = 0  # data position in windows, over all ranks; includes windows skipped by rollbacks
    tokens_seen: int = 0  # tokens behind the current weights (skipped and rolled-back steps excluded)
    val_loss: float | None = None  # the latest validation loss
    events: list[dict[str, Any]] = field(default_factory=list)  # spikes and rollbacks, in order


@dataclass
class TrainResult:
    state: LoopState
    final_train_loss: float | None  # mean of the last (up to) 10 accepted step losses
    resumed_from: int | None  # checkpoint step this process started from, None for a fresh start
    steps_run: int  # optimizer steps this process executed (replays after a rollback included)
    loop_time_s: float  # wall time of the step loop, evaluation and checkpoints included
    tokens_per_s: float | None  # training throughput of this process's steps (all ranks)
    mfu: float | None


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig, par: Parallel) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (>= 2-D: linear weights, embeddings), none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fast = {"fused": True} if par.device.type == "cuda" and not par.fsdp else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **fast)


class MetricsLog:
    """metrics.jsonl: one JSON row per logged step, appended and flushed as training goes (rank 0 only).

    On (re)start, rows after the checkpoint being resumed are dropped: they will be replayed. After
    a rollback the replayed steps appear again later in the file; readers keep the last row per step.
    """

    def __init__(self, path: Path, *, keep_through: int, enabled: bool):
        self.f = None
        if not enabled:
            return
        kept = []
        if keep_through > 0 and path.is_file():
            kept = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= keep_through]
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))
        self.f = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        if self.f is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            self.f.write(json.dumps(clean, allow_nan=False) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


class Faults:
    """TEST HOOKS (config fields test_*): a NaN loss, a batch of random tokens, an LR spike.

    Active until the first rollback, or always with test_fault_repeat (to reach max_rollbacks).
    """

    def __init__(self, cfg: PretrainConfig, vocab_size: int):
        self.cfg, self.vocab_size = cfg, vocab_size

    def _on(self, detector: SpikeDetector) -> bool:
        return self.cfg.test_fault_repeat or detector.rollbacks == 0

    def nan(self, n: int, detector: SpikeDetector) -> bool:
        return self.cfg.test_nan_at_step == n and self._on(detector)

    def batches(self, n: int, batches: list[np.ndarray], detector: SpikeDetector) -> list[np.ndarray]:
        if self.cfg.test_garbage_at_step != n or not self._on(detector):
            return batches
        rng = np.random.default_rng([self.cfg.seed, n, 7])
        return [rng.integers(0, self.vocab_size, size=b.shape, dtype=np.int64) for b in batches]

    def lr_mult(self, n: int, detector: SpikeDetector) -> float:
        g = self.cfg.test_garbage_at_step
        if g is None or not self._on(detector) or not (g <= n < g + self.cfg.test_lr_spike_steps):
            return 1.0
        return self.cfg.test_lr_spike


def train(cfg: PretrainConfig, model: torch.nn.Module, forward: torch.nn.Module, par: Parallel, data: TrainBatches,
          val: list[np.ndarray], *, out_dir: Path, run_id: str, vocab_size: int, flops_per_token: float | None = None,
          peak_flops: float | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train `model` (called through `forward`: itself, compiled, DDP or FSDP) to cfg.max_steps.

    Resumes from the newest checkpoint in out_dir/checkpoints written by this run (`run_id`),
    else starts at step 0 and saves a step-0 checkpoint as the first rollback target.
    `on_step(step)` runs after every completed step; an exception from it stops training as a
    kill would (tests use it).
    """
    ckpt_dir = out_dir / "checkpoints"
    opt = make_optimizer(model, cfg, par)
    detector = SpikeDetector(SpikeSettings.from_config(cfg))
    faults = Faults(cfg, vocab_size)
    st = LoopState()
    G, T = data.global_batch, data.windows.seq_len  # windows per step (all ranks), tokens per window

    def save() -> None:
        model_sd, opt_sd = parallel.full_state(par, model, opt)
        rngs = parallel.gather(par, capture_rng())
        if par.main:
            save_checkpoint(ckpt_dir, st.step, model=model_sd, optimizer=opt_sd, rng=rngs, keep=cfg.keep_checkpoints,
                            state={"run_id": run_id, "world_size": par.world_size, "loop": asdict(st),
                                   "detector": detector.state_dict()})
        parallel.barrier(par)

    def restore(path: Path) -> dict[str, Any]:
        ck = load_checkpoint(path)
        parallel.load_state(par, model, opt, ck.model, ck.optimizer)
        restore_rng(ck.rng[par.rank % len(ck.rng)])
        return ck.state

    # --- start or resume ---------------------------------------------------------------------
    ours = [p for _, p in list_checkpoints(ckpt_dir) if read_state(p).get("run_id") == run_id]
    resumed_from = None
    if ours:
        saved = restore(ours[-1])
        st = LoopState(**saved["loop"])
        detector.load_state_dict(saved["detector"])
        resumed_from = st.step
    else:
        save()
    log = MetricsLog(out_dir / "metrics.jsonl", keep_through=st.step, enabled=par.main)
    bar = tqdm(total=cfg.max_steps, initial=st.step, desc="pretrain", unit="step", disable=not par.main,
               dynamic_ncols=True, mininterval=1.0)
    if resumed_from is not None and par.main:
        tqdm.write(f"pretrain: resuming from {ours[-1]} (step {st.step})")

    steps_run, tokens_run, compute_s = 0, 0, 0.0
    t_start = time.perf_counter()
    forward.train()
    try:
        while st.step < cfg.max_steps:
            n = st.step + 1  # the step being taken, 1-based
            t0 = time.perf_counter()
            lr = lr_at(st.step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                       min_lr_ratio=cfg.min_lr_ratio) * detector.lr_scale(st.step) * faults.lr_mult(n, detector)
            for g in opt.param_groups:
                g["lr"] = lr

            # forward + backward over grad_accum micro-batches; gradients reduced on the last one
            batches = faults.batches(n, data.micro_batches(st.cursor), detector)
            loss_sum = torch.zeros((), device=par.device)
            for i, b in enumerate(batches):
                x = torch.from_numpy(b).to(par.device, non_blocking=True)  # (B, T+1) token ids
                with parallel.no_grad_sync(forward, skip=i < len(batches) - 1):
                    with autocast_for(par.device, cfg.dtype):
                        loss = causal_lm_loss(forward, x)
                    if faults.nan(n, detector):
                        loss = loss * float("nan")
                    (loss / len(batches)).backward()
                loss_sum += loss.detach()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
            loss_t = parallel.mean_across(par, loss_sum / len(batches))
            loss_v, norm_v = torch.stack([loss_t, parallel.grad_norm_value(norm).to(loss_t)]).tolist()  # one sync

            # the spike ladder decides whether this update happens
            verdict = detector.observe(n, loss_v, norm_v)
            if verdict.action == "ok":
                opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            steps_run, tokens_run, compute_s = steps_run + 1, tokens_run + G * T, compute_s + dt
            row: dict[str, Any] = {"step": n, "loss": loss_v, "lr": lr, "grad_norm": norm_v,
                                   "tokens_per_s": G * T / dt}
            if verdict.action != "ok":
                event = _event(n, verdict, loss_v, norm_v)
                st.events.append(event)
                row |= {"action": verdict.action, "reason": verdict.reason, "event": event}
                if par.main:
                    tqdm.write(f"pretrain: step {n}: spike ({verdict.reason}) -> {verdict.action}")
            if verdict.action == "stop":
                log.write(row)
                raise SpikeError(
                    f"pretrain: step {n}: {verdict.reason}; already rolled back {detector.rollbacks} times "
                    f"(pretrain.max_rollbacks={cfg.max_rollbacks}), so training stops here. The last good "
                    f"checkpoints are in {ckpt_dir}. Lower pretrain.lr, lengthen pretrain.warmup_steps, "
                    "or raise pretrain.max_rollbacks.")
            if verdict.action == "rollback":
                # back to the newest checkpoint; its data through this step's batch (+ margin) is skipped
                skip_to = st.cursor + G * (1 + cfg.spike_margin_steps)
                saved = restore([p for _, p in list_checkpoints(ckpt_dir)
                                 if read_state(p).get("run_id") == run_id][-1])
                st.step, st.tokens_seen = saved["loop"]["step"], saved["loop"]["tokens_seen"]
                event |= {"to_step": st.step, "skipped_windows": [saved["loop"]["cursor"], skip_to],
                          "lr_factor": cfg.spike_lr_factor, "lr_factor_until_step": st.step + cfg.spike_lr_steps}
                st.cursor = skip_to
                detector.after_rollback(st.step, saved["detector"])
                log.write(row)
                bar.n = st.step
                bar.refresh()
                continue

            # the step is done (updated, or skipped: then its data still counts as consumed)
            st.step, st.cursor = n, st.cursor + G
            if verdict.action == "ok":
                st.tokens_seen += G * T
            if (cfg.eval_every and n % cfg.eval_every == 0) or n == cfg.max_steps:
                st.val_loss = validation_loss(forward, val, par, cfg.dtype)
                row["val_loss"] = st.val_loss
            if flops_per_token and (u := mfu(row["tokens_per_s"], flops_per_token, peak_flops, par.world_size)):
                row["mfu"] = u
            if n % cfg.log_every == 0 or n == cfg.max_steps or "val_loss" in row or "action" in row:
                log.write(row | {"tokens": st.tokens_seen, "time_s": time.perf_counter() - t_start})
            bar.set_postfix(loss=f"{loss_v:.3f}", lr=f"{lr:.2e}", tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False)
            bar.update(1)
            if n % cfg.checkpoint_every == 0 or n == cfg.max_steps:
                save()
            if on_step is not None:
                on_step(n)
    finally:
        bar.close()
        log.close()

    loop_time = time.perf_counter() - t_start
    recent = detector.losses[-10:]
    tps = tokens_run / compute_s if compute_s > 0 else None
    return TrainResult(state=st, final_train_loss=sum(recent) / len(recent) if recent else None,
                       resumed_from=resumed_from, steps_run=steps_run, loop_time_s=loop_time, tokens_per_s=tps,
                       mfu=mfu(tps, flops_per_token, peak_flops, par.world_size) if (tps and flops_per_token) else None)


def _event(n: int, v: Verdict, loss: float, grad_norm: float) -> dict[str, Any]:
    def num(x: float | None) -> float | None:
        return x if x is None or math.isfinite(x) else None

    return {"step": n, "kind": "spike", "action": v.action, "reason": v.reason, "loss": num(loss),
            "grad_norm": num(grad_norm), "z_loss": num(v.z_loss), "z_grad": num(v.z_grad)}
