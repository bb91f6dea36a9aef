"""SFTConfig and RewardConfig: every setting of the sft and reward stages, with the LoRA section they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gristmill.align.data import DataConfig
from gristmill.pretrain.config import CheckpointConfig, OptimConfig, SpikeConfig

LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass(kw_only=True)
class LoraConfig:
    """Low-rank adapters (peft) on the linear layers; the base weights stay frozen: `[<stage>.lora]`."""

    #: train LoRA adapters (true) or every weight (false: full fine-tuning; use a ~10x lower optim.lr)
    enabled: bool = True
    #: adapter rank
    r: int = 16
    #: scaling numerator: the update is (alpha / r) * B @ A
    alpha: int = 32
    #: dropout on the adapter input
    dropout: float = 0.05
    #: module names (suffixes) that get adapters; the defaults are every linear layer of a Llama block
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEARS))

    def __post_init__(self) -> None:
        _need(self.r >= 1, f"lora.r={self.r} must be at least 1 (e.g. 16)")
        _need(self.alpha >= 1, f"lora.alpha={self.alpha} must be at least 1 (e.g. 2 * r)")
        _need(0.0 <= self.dropout < 1.0, f"lora.dropout={self.dropout} must be within [0, 1)")
        _need(bool(self.target_modules), "lora.target_modules is empty; name the linear layers to adapt")


@dataclass(kw_only=True)
class _TrainingStage:
    """What SFT and the reward model share: data, adapters, run length, batch, evaluation, hardware."""

    #: reading the data files, the eval split, malformed records
    data: DataConfig = field(default_factory=DataConfig)
    #: LoRA adapters or full fine-tuning
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: passes over the training data (the LR schedule spans them)
    epochs: int = 1
    #: optimizer steps; 0 = as many as `epochs` take
    max_steps: int = 0
    #: rows per micro-batch on each process (SFT: packed rows of max_length tokens, or examples; reward: pairs)
    batch_size: int = 8
    #: micro-batches accumulated per optimizer step
    grad_accum: int = 1
    #: tokens per example after the chat template; longer ones lose the prompt's start and the response's end
    max_length: int = 512
    #: evaluate on the held-out data every this many steps; 0 = at the end of each epoch
    eval_every: int = 0
    #: write a row to metrics.jsonl every this many steps
    log_every: int = 1
    #: base seed: adapter init, the score head, the data order and dropout derive from it
    seed: int = 0
    #: where to train: auto = CUDA when available, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: compute dtype: auto = bf16 autocast on CUDA, fp32 on CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def _check(self, stage: str) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "log_every"):
            v = getattr(self, name)
            _need(v >= 1, f"{stage}.{name}={v} must be at least 1")
        for name in ("max_steps", "eval_every"):
            v = getattr(self, name)
            _need(v >= 0, f"{stage}.{name}={v} is negative; use 0 or more")


@dataclass(kw_only=True)
class SFTConfig(_TrainingStage):
    #: AdamW and the warmup-cosine LR (LoRA default; for full fine-tuning lower lr ~10x)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=10, weight_decay=0.0,
                                                                   beta2=0.999))
    #: loss-spike detection and recovery (a non-finite loss must never reach the adapter)
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    #: checkpoint interval and retention
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=100))
    #: pack several examples per row of max_length tokens (no attention across them); false = one padded example per row
    packing: bool = True
    #: held-out examples with an `answer` whose greedy answers are checked before and after training; 0 = none
    eval_generate: int = 64
    #: tokens generated per answer for that check and for the report's samples
    max_new_tokens: int = 48
    #: sample generations (held-out prompts) shown before / after in report.md
    samples: int = 4

    def __post_init__(self) -> None:
        self._check("sft")
        for name in ("eval_generate", "samples"):
            _need(getattr(self, name) >= 0, f"sft.{name}={getattr(self, name)} is negative; use 0 or more")
        _need(self.max_new_tokens >= 1, f"sft.max_new_tokens={self.max_new_tokens} must be at least 1")


@dataclass(kw_only=True)
class RewardConfig(_TrainingStage):
    #: AdamW and the warmup-cosine LR (the score head is new: a higher LR than SFT's suits it)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, warmup_steps=10, weight_decay=0.0,
                                                                   beta2=0.999))
    #: loss-spike detection and recovery
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    #: checkpoint interval and retention
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=100))
    #: pairs per micro-batch on each process (chosen and rejected go through one forward of 2 x batch_size rows)
    batch_size: int = 8
    #: margin in -log sigmoid(r_chosen - r_rejected - margin); a pair's own "margin" field wins when present
    margin: float = 0.0
    #: weight of the reward-centring term coef * mean((r_chosen + r_rejected)^2), which keeps rewards near 0; 0 = off
    center_coef: float = 0.0

    def __post_init__(self) -> None:
        self._check("reward")
        _need(self.center_coef >= 0, f"reward.center_coef={self.center_coef} is negative; use 0 (off) or e.g. 0.01")
