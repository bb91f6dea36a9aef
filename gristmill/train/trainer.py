"""The pieces of one training run that every loop drives: optimizer, LR, an update over micro-batches, evaluation, checkpoints, log.

`train.loop.train` (pretrain, SFT, reward, DPO) and `align/ppo.py` (PPO, GRPO, RLOO) both hold a `Trainer` and
call it in the same order: `start()` (resume or save step 0), per step `set_lr`, one or more `update`s, maybe
`evaluate`, `log`, `save`, and `rollback` when the spike ladder asks for it. Only trainable parameters are
checkpointed when some are frozen (LoRA): the frozen ones come from the input model again on resume.
The trained model may be a `torch.nn.ModuleDict` of several models (PPO: policy and value): each is then a
checkpoint part of its own, and its gradients are clipped on their own (their scales differ).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from gristmill.config import to_dict
from gristmill.train import parallel
from gristmill.train.checkpoint import (capture_rng, clean_partial, load_checkpoint, restore_rng, run_checkpoints,
                                        save_checkpoint)
from gristmill.train.config import LoopConfig, OptimConfig
from gristmill.train.metrics import MetricsLog
from gristmill.train.parallel import Parallel, autocast_for
from gristmill.train.schedule import lr_at
from gristmill.train.spikes import SpikeDetector, Verdict

# loss_fn(forward, micro_batch) -> (loss summed over its units, units) or (..., stats): stats maps names to
# tensors summed over the same units (e.g. pairs ranked right); the loop logs train_<name> = their mean and,
# on held-out batches, eval_loss and eval_<name>. The units (supervised tokens, pairs, responses) are read off
# the labels, never the weights.
LossFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, torch.Tensor | int] | tuple[Any, Any, dict]"]


@dataclass
class LoopState:
    """What a checkpoint holds besides weights, optimizer and RNG (all JSON)."""

    step: int = 0  # optimizer steps (ppo: iterations) completed
    cursor: int = 0  # data position over all ranks; includes positions skipped by rollbacks
    seen: int = 0  # units (tokens, pairs) behind the current weights; skipped and rolled-back steps excluded
    evals: dict[str, Any] = field(default_factory=dict)  # the latest evaluation's metrics
    events: list[dict[str, Any]] = field(default_factory=list)  # spikes and rollbacks, in order
    extra: dict[str, Any] = field(default_factory=dict)  # a stage's own state (ppo: the adaptive KL coefficient)


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


@dataclass
class Update:
    """One optimizer update's figures (every rank has the same)."""

    loss: float  # mean over the update's units
    grad_norm: float  # global norm before clipping, over every trained model
    part_norms: dict[str, float]  # per model when several are trained (ppo: policy, value)
    units: int
    stats: dict[str, float]  # each stat's mean over the units
    verdict: Verdict


def parts_of(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The trained models by checkpoint part name: a ModuleDict's entries, else {"model": model}."""
    return dict(model.items()) if isinstance(model, torch.nn.ModuleDict) else {"model": model}


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, par: Parallel) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of each part; weight decay on matrices (>= 2-D), none on norms and biases."""
    groups = []
    for name, part in parts_of(model).items():
        params = [p for p in part.parameters() if p.requires_grad]
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "part": name},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "part": name}]
    fast = {"fused": True} if par.device.type == "cuda" and not par.fsdp else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **fast)


class Trainer:
    """Optimizer, spike detector, checkpoints and metrics log of one training run of `model` (called through
    `forward`: itself, a scorer around it, compiled, DDP or FSDP) for `max_steps` steps."""

    def __init__(self, cfg: LoopConfig, model: torch.nn.Module, forward: torch.nn.Module, par: Parallel, *,
                 out_dir: Path, run_id: str, stage: str, max_steps: int, hooks: Hooks | None = None):
        self.cfg, self.model, self.forward, self.par = cfg, model, forward, par
        self.out_dir, self.run_id, self.stage, self.max_steps = Path(out_dir), run_id, stage, max_steps
        self.hooks = hooks or Hooks()
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.parts = parts_of(model)
        if cfg.gradient_checkpointing:
            from gristmill.train.memory import enable_gradient_checkpointing

            for part in self.parts.values():
                enable_gradient_checkpointing(part)
        self.opt = make_optimizer(model, cfg.optim, par)
        self.detector = SpikeDetector(cfg.spike, after_step=cfg.optim.warmup_steps)
        self.params = {name: [p for p in part.parameters() if p.requires_grad] for name, part in self.parts.items()}
        self.frozen = any(not p.requires_grad for p in model.parameters())
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.state = LoopState()
        self.resumed_from: int | None = None
        self.log: MetricsLog | None = None

    # --- checkpoints ---------------------------------------------------------------------------

    def save(self) -> None:
        model_sd, opt_sd = parallel.full_state(self.par, self.model, self.opt)
        if self.frozen:
            model_sd = {k: v for k, v in model_sd.items() if k in self.trainable}
        rngs = parallel.gather(self.par, capture_rng())
        if self.par.main:
            save_checkpoint(self.ckpt_dir, self.state.step, parts=self._split(model_sd), optimizer=opt_sd, rng=rngs,
                            keep=self.cfg.checkpoint.keep,
                            state={"run_id": self.run_id, "world_size": self.par.world_size,
                                   "loop": asdict(self.state), "detector": self.detector.state_dict()})
        parallel.barrier(self.par)

    def _split(self, sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Checkpoint parts: "model" (every weight) or "adapter" (the trainable ones: LoRA and any new head), or
        one part per model of a ModuleDict ("policy.x" is "x" of part "policy")."""
        if list(self.parts) == ["model"]:
            return {"adapter" if self.frozen else "model": sd}
        return {name: {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")} for name in self.parts}

    def restore(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint (every file verified against its recorded sha256) into model, optimizer and RNG."""
        ck = load_checkpoint(path)
        # the inverse of _split: one part is the state dict itself, several are prefixed by their names
        sd = next(iter(ck.parts.values())) if list(self.parts) == ["model"] else {
            f"{name}.{k}": v for name, part in ck.parts.items() for k, v in part.items()}
        parallel.load_state(self.par, self.model, self.opt, sd, ck.optimizer, strict=not self.frozen)
        restore_rng(ck.rng[self.par.rank % len(ck.rng)])
        return ck.state

    def start(self, *, enabled_log: bool = True) -> int | None:
        """Resume from this run's newest checkpoint, else save step 0 (the first rollback target); open the log."""
        if self.par.main:
            for name in clean_partial(self.ckpt_dir):
                tqdm.write(f"{self.stage}: removed {self.ckpt_dir / name}, left by a save that was killed")
        parallel.barrier(self.par)
        ours = run_checkpoints(self.ckpt_dir, self.run_id)
        if ours:
            saved = self.restore(ours[-1])
            self.state = LoopState(**saved["loop"])
            self.detector.load_state_dict(saved["detector"])
            self.resumed_from = self.state.step
            if self.par.main:
                tqdm.write(f"{self.stage}: resuming from {ours[-1]} (step {self.state.step})")
        else:
            self.save()
        trackers = None
        if self.cfg.tracking and self.par.main:
            from gristmill.train.tracking import Trackers

            trackers = Trackers(list(self.cfg.tracking), out_dir=self.out_dir, stage=self.stage, run_id=self.run_id,
                                config=to_dict(self.cfg))
        self.log = MetricsLog(self.out_dir / "metrics.jsonl", keep_through=self.state.step,
                              enabled=self.par.main and enabled_log, trackers=trackers)
        return self.resumed_from

    def rollback(self, skip_to: int) -> dict[str, Any]:
        """Back to the newest checkpoint (verified); the data up to cursor `skip_to` is skipped. The event to log."""
        st, sp = self.state, self.cfg.spike
        saved = self.restore(run_checkpoints(self.ckpt_dir, self.run_id)[-1])
        st.step, st.seen, st.extra = saved["loop"]["step"], saved["loop"]["seen"], saved["loop"]["extra"]
        event = {"to_step": st.step, "skipped": [saved["loop"]["cursor"], skip_to], "lr_factor": sp.lr_factor,
                 "lr_factor_until_step": st.step + sp.lr_steps}
        st.cursor = skip_to
        self.detector.after_rollback(st.step, saved["detector"])
        return event

    # --- one step ------------------------------------------------------------------------------

    def set_lr(self) -> float:
        """The schedule's LR for the next step (lowered after a rollback), set on every param group."""
        o, step = self.cfg.optim, self.state.step
        lr = lr_at(step, lr=o.lr, warmup_steps=o.warmup_steps, max_steps=self.max_steps,
                   min_lr_ratio=o.min_lr_ratio) * self.detector.lr_scale(step)
        lr = self.hooks.lr(step + 1, lr, self.detector.rollbacks)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def update(self, n: int, micro: list[Any], loss_fn: LossFn) -> Update:
        """Forward + backward over this rank's micro-batches, gradients scaled to the mean over every unit of the
        update on all ranks, clipped, judged by the spike detector, and applied unless it says otherwise."""
        par, hooks = self.par, self.hooks
        sums = _Sums(par.device)
        for i, b in enumerate(micro):
            # gradients are reduced across ranks on the last micro-batch only
            with parallel.no_grad_sync(self.forward, skip=i < len(micro) - 1):
                with autocast_for(par.device, self.cfg.dtype):
                    loss_sum, count, *more = loss_fn(self.forward, b)
                loss_sum = hooks.loss(n, loss_sum, self.detector.rollbacks)
                loss_sum.backward()
            sums.add(loss_sum, count, *more)
        total = parallel.sum_across(par, sums.total)  # one collective for the loss, the units and the stats
        # The gradients hold this rank's sum over its units, averaged over ranks by DDP / FSDP: times
        # world_size / (units on all ranks) makes them the mean over every unit of the update, however
        # unevenly the label masks split the units between micro-batches and ranks.
        scale = (par.world_size / total[1].clamp(min=1.0)).float()
        clip = self.cfg.optim.clip if self.cfg.optim.clip > 0 else math.inf
        norms = []
        for params in self.params.values():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            norms.append(parallel.grad_norm_value(torch.nn.utils.clip_grad_norm_(params, clip)).to(total))
        loss_t = total[0] / total[1].clamp(min=1.0)
        loss_v, units, *rest = torch.cat([torch.stack([loss_t, total[1], *norms]), total[2:]]).tolist()  # one sync
        part_norms, stat_sums = rest[:len(norms)], rest[len(norms):]
        norm_v = math.sqrt(sum(x * x for x in part_norms))
        verdict = self.detector.observe(n, loss_v, norm_v)
        if verdict.action == "ok":
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return Update(loss=loss_v, grad_norm=norm_v,
                      part_norms=dict(zip(self.parts, part_norms)) if len(self.parts) > 1 else {},
                      units=int(units), stats={k: v / max(units, 1) for k, v in zip(sums.names, stat_sums)},
                      verdict=verdict)

    @torch.no_grad()
    def evaluate(self, batches: list[Any], loss_fn: LossFn) -> dict[str, float]:
        """The stage's own loss function on held-out micro-batches (this rank's share), in eval mode without
        gradients: eval_loss and eval_<stat>, each a mean over every unit on every rank."""
        return evaluate_loss(self.forward, self.par, batches, loss_fn, self.cfg.dtype)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class _Sums:
    """A loss function's outputs summed over micro-batches, on the device (no sync): (loss, units, *stats)."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros(2, dtype=torch.float64, device=device)
        self.names: list[str] = []  # every micro-batch reports the same stats, in the same order

    def add(self, loss_sum: torch.Tensor, count: Any, *more: dict[str, torch.Tensor]) -> None:
        sums = [loss_sum.detach().double(), torch.as_tensor(count, dtype=torch.float64, device=self.total.device)]
        if more:
            self.names = list(more[0])
            sums += [v.detach().double().reshape(()) for v in more[0].values()]
        if len(self.total) < len(sums):
            self.total = torch.cat([self.total, self.total.new_zeros(len(sums) - len(self.total))])
        self.total += torch.stack(sums)


@torch.no_grad()
def evaluate_loss(forward: torch.nn.Module, par: Parallel, batches: list[Any], loss_fn: LossFn,
                  dtype: str = "auto") -> dict[str, float]:
    """eval_loss and eval_<stat> of `loss_fn` over `batches` (this rank's share), summed over ranks; eval mode
    (no dropout) for the call, the module's mode restored after. {} when no rank has a unit."""
    was = forward.training
    forward.eval()
    sums = _Sums(par.device)
    try:
        for b in batches:
            with autocast_for(par.device, dtype):
                sums.add(*loss_fn(forward, b))
    finally:
        forward.train(was)
    total = sums.total
    if par.distributed:  # a rank without a held-out batch has no stats yet: pad to the longest
        import torch.distributed as dist

        size = torch.tensor([len(total)], device=par.device)
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
        total = torch.cat([total, total.new_zeros(int(size.item()) - len(total))])
    s, n, *stats = parallel.sum_across(par, total).tolist()
    if not n:
        return {}
    return {"eval_loss": s / n, **{f"eval_{k}": v / n for k, v in zip(sums.names, stats)}}
