"""The training core every training stage shares: AdamW steps on a warmup-cosine LR, spike checks, rollback, metrics, checkpoints.

Read `train` top to bottom: resume or start, then per step set the LR, run the micro-batches,
scale the summed gradients to a mean over every supervised unit, clip, ask the spike detector,
step or skip or roll back, and log / evaluate / checkpoint. What is trained on and how the loss is
computed come from the stage: a batch source (`micro_batches(cursor)`, `global_batch`) and a loss
function returning (loss summed over units, number of units) for one micro-batch - tokens for
pretrain and SFT, pairs for the reward model.
Steps are counted 1-based in everything a user sees: "step 40" is the 40th optimizer update, and
checkpoint step-00000040 holds the state after it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from tqdm.auto import tqdm

from gristmill.manifests import atomic_write_text
from gristmill.pretrain import parallel
from gristmill.pretrain.checkpoint import capture_rng, load_checkpoint, restore_rng, run_checkpoints, save_checkpoint
from gristmill.pretrain.config import OptimConfig
from gristmill.pretrain.evaluate import autocast_for, mfu
from gristmill.pretrain.parallel import Parallel
from gristmill.pretrain.schedule import lr_at
from gristmill.pretrain.spikes import SpikeDetector, SpikeError, Verdict

# (model to call, one micro-batch) -> (loss summed over its units, number of units); the units are
# supervised tokens or pairs, and their count must not depend on the weights (it is read off the labels)
# loss_fn(forward, micro_batch) -> (loss summed over its units, units) or (..., stats): stats maps names to
# tensors summed over the same units (e.g. pairs ranked right); the loop logs train_<name> = their mean.
LossFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, torch.Tensor | int] | tuple[Any, Any, dict]"]


class BatchSource(Protocol):
    global_batch: int  # cursor positions one optimizer step consumes, over all ranks

    def micro_batches(self, cursor: int) -> list[Any]:
        """This rank's micro-batches for the step that starts at `cursor`: a pure function of (cursor, rank)."""


@dataclass
class LoopState:
    """What a checkpoint holds besides weights, optimizer and RNG (all JSON)."""

    step: int = 0  # optimizer steps completed
    cursor: int = 0  # data position over all ranks; includes positions skipped by rollbacks
    seen: int = 0  # units (tokens, pairs) behind the current weights; skipped and rolled-back steps excluded
    evals: dict[str, Any] = field(default_factory=dict)  # the latest evaluation's metrics
    events: list[dict[str, Any]] = field(default_factory=list)  # spikes and rollbacks, in order


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


class Hooks:
    """Test-only injection points (fault injection, simulated kills); these defaults change nothing.

    `rollbacks` is the number of rollbacks so far, so a fault can stop after the first one.
    """

    def lr(self, step: int, lr: float, rollbacks: int) -> float:
        return lr

    def batches(self, step: int, batches: list[Any], rollbacks: int) -> list[Any]:
        return batches

    def loss(self, step: int, loss: torch.Tensor, rollbacks: int) -> torch.Tensor:
        return loss

    def after_step(self, step: int) -> None:
        """Runs after every completed step; an exception here stops training as a kill would."""


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, par: Parallel) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices (>= 2-D), none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fast = {"fused": True} if par.device.type == "cuda" and not par.fsdp else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **fast)


def is_timing(key: str) -> bool:
    """Wall-clock fields of a log row (tokens_per_s, time_s, time_generate_s, mfu): they differ run to run."""
    return key == "mfu" or key.endswith("_per_s") or key.startswith("time")


class MetricsLog:
    """metrics.jsonl: one JSON row per logged step, appended and flushed as training goes (rank 0 only), and
    timings.jsonl beside it: the same steps' wall-clock fields (is_timing), so that metrics.jsonl is the same
    bytes for the same config and inputs.

    On (re)start, rows after the checkpoint being resumed are dropped: they will be replayed. After
    a rollback the replayed steps appear again later in the file; readers keep the last row per step.
    """

    def __init__(self, path: Path, *, keep_through: int, enabled: bool):
        self.files: list[Any] = []
        if not enabled:
            return
        for p in (path, path.with_name(TIMINGS)):
            kept = []
            if keep_through > 0 and p.is_file():
                kept = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                        if ln.strip() and json.loads(ln).get("step", 0) <= keep_through]
            atomic_write_text(p, "".join(ln + "\n" for ln in kept))
            self.files.append(open(p, "a", encoding="utf-8"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.files:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        timing = {k: v for k, v in clean.items() if is_timing(k)}
        parts = ({k: v for k, v in clean.items() if k not in timing}, {"step": clean.get("step"), **timing})
        for f, part in zip(self.files, parts):
            f.write(json.dumps(part, allow_nan=False) + "\n")
            f.flush()

    def close(self) -> None:
        for f in self.files:
            f.close()


TIMINGS = "timings.jsonl"


def train(cfg: Any, model: torch.nn.Module, forward: torch.nn.Module, par: Parallel, batches: BatchSource,
          loss_fn: LossFn, *, out_dir: Path, run_id: str, stage: str, max_steps: int | None = None,
          evaluate: Callable[[], dict[str, Any]] | None = None, unit: str = "tokens",
          flops_per_unit: float | None = None, peak_flops: float | None = None,
          hooks: Hooks | None = None) -> TrainResult:
    """Train `model` (called through `forward`: itself, compiled, DDP or FSDP) for `max_steps` steps.

    `cfg` is the stage's config: its sections optim, spike and checkpoint, and eval_every,
    log_every, dtype (and max_steps unless given). `evaluate()` returns metrics (e.g. val_loss) and
    runs every cfg.eval_every steps and at the end. Only trainable parameters are checkpointed when
    some are frozen (LoRA): the frozen ones come from the input model again on resume.
    Resumes from the newest checkpoint in out_dir/checkpoints written by this run (`run_id`),
    else starts at step 0 and saves a step-0 checkpoint as the first rollback target.
    """
    max_steps = cfg.max_steps if max_steps is None else max_steps
    hooks = hooks or Hooks()
    ckpt_dir = out_dir / "checkpoints"
    opt = make_optimizer(model, cfg.optim, par)
    detector = SpikeDetector(cfg.spike, after_step=cfg.optim.warmup_steps)
    st = LoopState()
    G = batches.global_batch
    params = [p for p in model.parameters() if p.requires_grad]
    frozen = len(params) < len(list(model.parameters()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def save() -> None:
        model_sd, opt_sd = parallel.full_state(par, model, opt)
        if frozen:
            model_sd = {k: v for k, v in model_sd.items() if k in trainable}
        rngs = parallel.gather(par, capture_rng())
        if par.main:
            save_checkpoint(ckpt_dir, st.step, model=model_sd, optimizer=opt_sd, rng=rngs, keep=cfg.checkpoint.keep,
                            state={"run_id": run_id, "world_size": par.world_size, "loop": asdict(st),
                                   "detector": detector.state_dict()})
        parallel.barrier(par)

    def restore(path: Path) -> dict[str, Any]:
        ck = load_checkpoint(path)
        parallel.load_state(par, model, opt, ck.model, ck.optimizer, strict=not frozen)
        restore_rng(ck.rng[par.rank % len(ck.rng)])
        return ck.state

    # --- start or resume ---------------------------------------------------------------------
    ours = run_checkpoints(ckpt_dir, run_id)
    resumed_from = None
    if ours:
        saved = restore(ours[-1])
        st = LoopState(**saved["loop"])
        detector.load_state_dict(saved["detector"])
        resumed_from = st.step
    else:
        save()
    log = MetricsLog(out_dir / "metrics.jsonl", keep_through=st.step, enabled=par.main)
    bar = tqdm(total=max_steps, initial=st.step, desc=stage, unit="step", disable=not par.main,
               dynamic_ncols=True, mininterval=1.0)
    if resumed_from is not None and par.main:
        tqdm.write(f"{stage}: resuming from {ours[-1]} (step {st.step})")

    o = cfg.optim
    steps_run, units_run, compute_s = 0, 0, 0.0
    t_start = time.perf_counter()
    forward.train()
    try:
        while st.step < max_steps:
            n = st.step + 1  # the step being taken, 1-based
            t0 = time.perf_counter()
            lr = lr_at(st.step, lr=o.lr, warmup_steps=o.warmup_steps, max_steps=max_steps,
                       min_lr_ratio=o.min_lr_ratio) * detector.lr_scale(st.step)
            lr = hooks.lr(n, lr, detector.rollbacks)
            for g in opt.param_groups:
                g["lr"] = lr

            # forward + backward over the micro-batches; gradients are reduced across ranks on the last one
            micro = hooks.batches(n, batches.micro_batches(st.cursor), detector.rollbacks)
            total = torch.zeros(2, dtype=torch.float64, device=par.device)  # (loss sum, units) of this rank
            stat_names: list[str] = []
            for i, b in enumerate(micro):
                with parallel.no_grad_sync(forward, skip=i < len(micro) - 1):
                    with autocast_for(par.device, cfg.dtype):
                        loss_sum, count, *more = loss_fn(forward, b)
                    loss_sum = hooks.loss(n, loss_sum, detector.rollbacks)
                    loss_sum.backward()
                step_units = [loss_sum.detach().double(), torch.as_tensor(count, dtype=torch.float64,
                                                                          device=par.device)]
                if more:  # every micro-batch reports the same stats, in the same order
                    stat_names = list(more[0])
                    step_units += [v.detach().double().reshape(()) for v in more[0].values()]
                if len(total) < len(step_units):
                    total = torch.cat([total, total.new_zeros(len(step_units) - len(total))])
                total += torch.stack(step_units)
            total = parallel.sum_across(par, total)  # one collective for the loss, the units and the stats
            # The gradients hold this rank's sum over its units, averaged over ranks by DDP / FSDP:
            # times world_size / (units on all ranks) makes them the mean over every unit of the step,
            # however unevenly the label masks split the units between micro-batches and ranks.
            scale = (par.world_size / total[1].clamp(min=1.0)).float()
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            norm = torch.nn.utils.clip_grad_norm_(params, o.clip if o.clip > 0 else float("inf"))
            loss_t = total[0] / total[1].clamp(min=1.0)
            head = torch.stack([loss_t, parallel.grad_norm_value(norm).to(loss_t), total[1]])
            loss_v, norm_v, units, *stat_sums = torch.cat([head, total[2:]]).tolist()  # one sync
            units = int(units)

            # the spike ladder decides whether this update happens
            verdict = detector.observe(n, loss_v, norm_v)
            if verdict.action == "ok":
                opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            steps_run, units_run, compute_s = steps_run + 1, units_run + units, compute_s + dt
            row: dict[str, Any] = {"step": n, "loss": loss_v, "lr": lr, "grad_norm": norm_v,
                                   f"{unit}_per_s": units / dt}
            row |= {f"train_{k}": v / max(units, 1) for k, v in zip(stat_names, stat_sums)}
            if verdict.action != "ok":
                event = _event(n, verdict, loss_v, norm_v)
                st.events.append(event)
                row |= {"action": verdict.action, "reason": verdict.reason, "event": event}
                if par.main:
                    tqdm.write(f"{stage}: step {n}: spike ({verdict.reason}) -> {verdict.action}")
            if verdict.action == "stop":
                log.write(row)
                raise SpikeError(
                    f"{stage}: step {n}: {verdict.reason}; already rolled back {detector.rollbacks} times "
                    f"({stage}.spike.max_rollbacks={cfg.spike.max_rollbacks}), so training stops here. The last good "
                    f"checkpoints are in {ckpt_dir}. Lower {stage}.optim.lr, lengthen {stage}.optim.warmup_steps, "
                    f"or raise {stage}.spike.max_rollbacks.")
            if verdict.action == "rollback":
                # back to the newest checkpoint; its data through this step's batch (+ margin) is skipped
                skip_to = st.cursor + G * (1 + cfg.spike.margin_steps)
                saved = restore(run_checkpoints(ckpt_dir, run_id)[-1])
                st.step, st.seen = saved["loop"]["step"], saved["loop"]["seen"]
                event |= {"to_step": st.step, "skipped": [saved["loop"]["cursor"], skip_to],
                          "lr_factor": cfg.spike.lr_factor, "lr_factor_until_step": st.step + cfg.spike.lr_steps}
                st.cursor = skip_to
                detector.after_rollback(st.step, saved["detector"])
                log.write(row)
                bar.n = st.step
                bar.refresh()
                continue

            # the step is done (updated, or skipped: then its data still counts as consumed)
            st.step, st.cursor = n, st.cursor + G
            if verdict.action == "ok":
                st.seen += units
            if evaluate is not None and ((cfg.eval_every and n % cfg.eval_every == 0) or n == max_steps):
                st.evals = evaluate()
                row |= st.evals
            if flops_per_unit and (u := mfu(row[f"{unit}_per_s"], flops_per_unit, peak_flops, par.world_size)):
                row["mfu"] = u
            if n % cfg.log_every == 0 or n == max_steps or st.evals.keys() & row.keys() or "action" in row:
                log.write(row | {unit: st.seen, "time_s": time.perf_counter() - t_start})
            bar.set_postfix(loss=f"{loss_v:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if n % cfg.checkpoint.every == 0 or n == max_steps:
                save()
            hooks.after_step(n)
    finally:
        bar.close()
        log.close()

    loop_time = time.perf_counter() - t_start
    recent = detector.losses[-10:]
    ups = units_run / compute_s if compute_s > 0 else None
    return TrainResult(state=st, final_train_loss=sum(recent) / len(recent) if recent else None,
                       resumed_from=resumed_from, steps_run=steps_run, loop_time_s=loop_time, units_per_s=ups,
                       compute_s=compute_s,
                       mfu=mfu(ups, flops_per_unit, peak_flops, par.world_size) if (ups and flops_per_unit) else None)


def _event(n: int, v: Verdict, loss: float, grad_norm: float) -> dict[str, Any]:
    def num(x: float | None) -> float | None:
        return x if x is None or math.isfinite(x) else None

    return {"step": n, "kind": "spike", "action": v.action, "reason": v.reason, "loss": num(loss),
            "grad_norm": num(grad_norm), "z_loss": num(v.z_loss), "z_grad": num(v.z_grad)}
