"""LoopConfig: what the training core reads from every training stage's config, with its optim, spike and checkpoint sections."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Tracker = Literal["tensorboard", "wandb", "trackio"]


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW on a warmup-cosine schedule, with gradient clipping: `[<stage>.optim]` of every training stage."""

    #: peak learning rate, reached at the end of warmup
    lr: float = 1e-3
    #: the cosine decays to lr * min_lr_ratio at the last step
    min_lr_ratio: float = 0.1
    #: steps of linear warmup from ~0 to lr
    warmup_steps: int = 100
    #: AdamW decoupled weight decay, applied to >=2-D weights only (not norms or biases)
    weight_decay: float = 0.1
    #: AdamW beta1
    beta1: float = 0.9
    #: AdamW beta2
    beta2: float = 0.95
    #: clip the global gradient norm to this value; 0 = measure but do not clip
    clip: float = 1.0

    def __post_init__(self) -> None:
        _need(self.lr > 0, f"optim.lr={self.lr} must be positive (e.g. 1e-3)")
        _need(0.0 <= self.min_lr_ratio <= 1.0, f"optim.min_lr_ratio={self.min_lr_ratio} must be within [0, 1]")
        _need(self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps} is negative; use 0 or more")
        _need(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} is negative; use 0 or more")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _need(0.0 <= v < 1.0, f"optim.{name}={v} must be within [0, 1) (e.g. 0.9 and 0.95)")
        _need(self.clip >= 0, f"optim.clip={self.clip} is negative; use 0 (no clipping) or e.g. 1.0")


@dataclass(kw_only=True)
class SpikeConfig:
    """Loss-spike detection and the skip -> rollback -> stop ladder: `[<stage>.spike]`. Judging starts after warmup."""

    #: accepted steps in the rolling mean/std of loss and grad norm; no z-score until it is full
    window: int = 32
    #: a loss or grad norm more than this many standard deviations above the rolling mean is a spike
    z: float = 6.0
    #: floor on the loss's rolling std, as a fraction of its mean, so a flat window does not turn noise into spikes
    min_std: float = 0.02
    #: the same floor for the gradient norm (noisier: clipping absorbs moderate jumps)
    min_std_grad: float = 0.25
    #: this many spikes ...
    k: int = 3
    #: ... within this many steps trigger a rollback instead of a skipped update
    m: int = 50
    #: after a rollback, skip the spike's data plus this many more global batches
    margin_steps: int = 1
    #: after a rollback, multiply the LR by this for lr_steps steps; 1.0 = leave the LR alone
    lr_factor: float = 0.5
    #: steps the lowered LR lasts after a rollback
    lr_steps: int = 100
    #: stop with an error after this many rollbacks
    max_rollbacks: int = 5

    def __post_init__(self) -> None:
        for name in ("window", "k", "m"):
            v = getattr(self, name)
            _need(v >= 1, f"spike.{name}={v} must be at least 1")
        for name in ("margin_steps", "lr_steps", "max_rollbacks"):
            v = getattr(self, name)
            _need(v >= 0, f"spike.{name}={v} is negative; use 0 or more")
        _need(self.z > 0, f"spike.z={self.z} must be positive (e.g. 6.0)")
        _need(self.min_std >= 0, f"spike.min_std={self.min_std} is negative; use 0 or e.g. 0.02")
        _need(self.min_std_grad >= 0, f"spike.min_std_grad={self.min_std_grad} is negative; use 0 or e.g. 0.25")
        _need(0.0 < self.lr_factor <= 1.0, f"spike.lr_factor={self.lr_factor} must be within (0, 1]; 1.0 leaves the LR alone")
        _need(self.k <= self.m, f"spike.k={self.k} spikes cannot fit in spike.m={self.m} steps; raise spike.m")


@dataclass(kw_only=True)
class CheckpointConfig:
    """How often training state is saved (also the rollback targets): `[<stage>.checkpoint]`."""

    #: save a checkpoint every this many steps (and at the end)
    every: int = 200
    #: keep this many newest checkpoints in out_dir/checkpoints
    keep: int = 2

    def __post_init__(self) -> None:
        for name in ("every", "keep"):
            v = getattr(self, name)
            _need(v >= 1, f"checkpoint.{name}={v} must be at least 1")


@dataclass(kw_only=True)
class LoopConfig:
    """The training core's settings. Every training stage's config is a LoopConfig (pretrain, sft, reward, dpo,
    ppo), with its own defaults: the keys read `<stage>.max_steps`, `<stage>.optim.lr`, ..."""

    #: optimizer steps (ppo: iterations of rollouts and updates); 0 = as many as the stage's `epochs` take
    max_steps: int = 0
    #: evaluate on the held-out data every this many steps (and at the end); 0 = once per epoch (pretrain: at the end)
    eval_every: int = 0
    #: write a row to metrics.jsonl every this many steps
    log_every: int = 1
    #: compute dtype: auto = bf16 autocast on CUDA, fp32 on CPU; weights and optimizer stay fp32
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    #: recompute each block's activations in the backward pass instead of keeping them (less memory, ~30 % more
    #: compute); the loss and gradients are the same
    gradient_checkpointing: bool = False
    #: experiment trackers that also get every metrics.jsonl row, written offline into the stage folder:
    #: any of tensorboard, wandb, trackio (pip install 'gristmill[tracking]'); metrics.jsonl is always written
    tracking: list[Tracker] = field(default_factory=list)
    #: AdamW, the warmup-cosine LR and clipping
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: loss-spike detection and recovery
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    #: checkpoint interval and retention
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def check_loop(self, stage: str) -> None:
        """The loop's own checks, each naming `<stage>.<field>`; every stage's __post_init__ calls it."""
        _need(self.max_steps >= 0, f"{stage}.max_steps={self.max_steps} is negative; use 0 or more")
        _need(self.eval_every >= 0, f"{stage}.eval_every={self.eval_every} is negative; use 0 or more")
        _need(self.log_every >= 1, f"{stage}.log_every={self.log_every} must be at least 1")
        _need(len(set(self.tracking)) == len(self.tracking), f"{stage}.tracking={self.tracking} names a tracker twice")
        if self.tracking:  # a missing package stops here, before any work, naming the extra to install
            from gristmill.train.tracking import check_backends

            check_backends(list(self.tracking), key=f"{stage}.tracking")
