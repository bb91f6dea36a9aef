"""SFTConfig, RewardConfig, DPOConfig and PPOConfig: every setting of the align stages, with the LoRA section they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gristmill.align.data import DataConfig
from gristmill.train.config import CheckpointConfig, LoopConfig, OptimConfig, SpikeConfig

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
class _TrainingStage(LoopConfig):
    """What SFT, the reward model and DPO share besides the loop: data, adapters, epochs, batch, hardware."""

    #: reading the data files, the eval split, malformed records
    data: DataConfig = field(default_factory=DataConfig)
    #: LoRA adapters or full fine-tuning
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: passes over the training data (the LR schedule spans them) when max_steps is 0
    epochs: int = 1
    #: rows per micro-batch on each process (SFT: packed rows of max_length tokens, or examples; reward: pairs)
    batch_size: int = 8
    #: micro-batches accumulated per optimizer step
    grad_accum: int = 1
    #: tokens per example after the chat template; longer ones lose the prompt's start and the response's end
    max_length: int = 512
    #: base seed: adapter init, the score head, the data order and dropout derive from it
    seed: int = 0
    #: where to train: auto = CUDA when available, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def _check(self, stage: str) -> None:
        self.check_loop(stage)
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            v = getattr(self, name)
            _need(v >= 1, f"{stage}.{name}={v} must be at least 1")


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
    #: pack each micro-batch's 2 x batch_size sequences into rows of max_length tokens (no attention across them;
    #: the score is read at each sequence's last token); false = one right-padded sequence per row
    packing: bool = True

    def __post_init__(self) -> None:
        self._check("reward")
        _need(self.center_coef >= 0, f"reward.center_coef={self.center_coef} is negative; use 0 (off) or e.g. 0.01")


@dataclass(kw_only=True)
class DPOConfig(_TrainingStage):
    #: the objective, a name in gristmill.align.losses.PREFERENCE_LOSSES: dpo (sigmoid), ipo, rpo (dpo + NLL on
    #: chosen), simpo and orpo (no reference), kto (unpaired desirable / undesirable examples; preference files
    #: are split into their two halves)
    loss: str = "dpo"
    #: strength of the pull toward the reference: higher = stay closer (SimPO: its own scale, ~2)
    beta: float = 0.1
    #: conservative DPO: the probability that a label is flipped (dpo only); 0 = plain DPO
    label_smoothing: float = 0.0
    #: rpo: weight of the chosen completion's per-token NLL
    rpo_alpha: float = 1.0
    #: simpo: the target margin γ between the length-normalised log-probs
    simpo_gamma: float = 0.5
    #: orpo: weight λ of the odds-ratio term next to the NLL
    orpo_lambda: float = 0.1
    #: kto: weights of the desirable and undesirable examples (raise one to balance unequal counts)
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    #: where the reference log-probs come from: "cache" = computed once by the SFT model and kept on disk,
    #: keyed by model, data, template and length (reused by reruns, resumes and other losses on the same
    #: data); "adapter" = the policy with its LoRA adapters disabled, at every step (needs lora.enabled)
    reference: Literal["cache", "adapter"] = "cache"
    #: folder for the reference cache; "" = <the output folder's parent>/.cache/reference-logps
    cache_dir: str = ""
    #: AdamW and the warmup-cosine LR (LoRA default; for full fine-tuning use ~10x lower)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=10, weight_decay=0.0,
                                                                   beta2=0.999))
    #: loss-spike detection and recovery
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    #: checkpoint interval and retention
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=100))
    #: pairs (kto: examples) per micro-batch on each process
    batch_size: int = 8
    #: pack the micro-batch's groups into rows of max_length tokens; false = one pair per row
    packing: bool = True
    #: held-out prompts answered by the SFT model and the trained one (greedy) for the judged win rate,
    #: the KL to the reference and the checkable-task accuracy; 0 = none
    judge_prompts: int = 64
    #: tokens generated per answer
    max_new_tokens: int = 64
    #: sample answers (before / after) shown in report.md
    samples: int = 4

    def __post_init__(self) -> None:
        from gristmill.align.losses import PREFERENCE_LOSSES  # here, not at the top: it imports torch

        self._check("dpo")
        _need(self.loss in PREFERENCE_LOSSES,
              f"dpo.loss={self.loss!r} is not one of {', '.join(PREFERENCE_LOSSES)}")
        _need(self.beta > 0, f"dpo.beta={self.beta} must be positive (e.g. 0.1; simpo ~2)")
        _need(0 <= self.label_smoothing < 0.5, f"dpo.label_smoothing={self.label_smoothing} must be in [0, 0.5)")
        for name in ("rpo_alpha", "orpo_lambda", "kto_desirable_weight", "kto_undesirable_weight", "simpo_gamma"):
            _need(getattr(self, name) >= 0, f"dpo.{name}={getattr(self, name)} is negative")
        for name in ("judge_prompts", "samples"):
            _need(getattr(self, name) >= 0, f"dpo.{name}={getattr(self, name)} is negative; use 0 or more")
        _need(self.max_new_tokens >= 1, f"dpo.max_new_tokens={self.max_new_tokens} must be at least 1")
        _need(self.label_smoothing == 0 or self.loss == "dpo",
              f"dpo.label_smoothing applies to loss=dpo only (loss={self.loss}); set it to 0")
        _need(self.reference == "cache" or self.lora.enabled,
              "dpo.reference=adapter needs LoRA (dpo.lora.enabled=true): full fine-tuning has no adapter to "
              "disable; use dpo.reference=cache")

    @property
    def uses_reference(self) -> bool:
        """Whether the loss reads the reference model's log-probs (losses.PREFERENCE_LOSSES says)."""
        from gristmill.align.losses import PREFERENCE_LOSSES

        return PREFERENCE_LOSSES[self.loss].needs_reference


@dataclass(kw_only=True)
class PPOConfig(LoopConfig):
    """RL from a reward: `[ppo]`. Each iteration (a loop step: max_steps of them) samples `prompts_per_iteration`
    x `samples` responses, scores them, estimates advantages and takes `ppo_epochs` passes of minibatch updates
    over them; the LR schedule, checkpoints and spike detector count iterations."""

    #: reading the prompt files, the eval split, malformed records
    data: DataConfig = field(default_factory=DataConfig)
    #: LoRA adapters on the policy (reference = adapters off) and on the value model; enabled=false trains
    #: every policy weight and keeps a frozen copy of the SFT model as the reference
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: gae = PPO with a value model; grpo = group-normalised scores, no value model; rloo = leave-one-out baseline
    advantage: Literal["gae", "grpo", "rloo"] = "gae"
    #: model = the reward model's score (--reward); check = 1/0 by the prompt's `answer`; model+check = both
    reward: Literal["model", "check", "model+check"] = "model"
    #: weight of the checker's 1/0 when reward=model+check (the reward model's score has weight 1)
    check_weight: float = 1.0
    #: subtracted from the score of a response cut at max_new_tokens without an end token
    unfinished_penalty: float = 1.0
    #: iterations (each: rollouts, scoring, ppo_epochs passes of updates)
    max_steps: int = 20
    #: prompts per iteration
    prompts_per_iteration: int = 8
    #: responses sampled per prompt (grpo / rloo need at least 2)
    samples: int = 1
    #: responses per minibatch update (a multiple of `samples`: a prompt's responses stay together)
    minibatch_size: int = 8
    #: passes over each iteration's responses
    ppo_epochs: int = 2
    #: sampling temperature (log-probs are of the policy at this temperature, in sampling and training)
    temperature: float = 1.0
    #: nucleus sampling mass
    top_p: float = 1.0
    #: response length limit in tokens
    max_new_tokens: int = 48
    #: responses generated per `generate` call (left-padded together; bounded by memory for the KV cache)
    rollout_batch_size: int = 64
    #: prompt + response tokens; prompts lose their start to fit max_length - max_new_tokens
    max_length: int = 512
    #: PPO's clipping range ε of the policy ratio, and of the value update around the old values
    clip: float = 0.2
    #: weight of the value loss next to the policy loss
    vf_coef: float = 0.5
    #: GAE discount and trace decay
    gamma: float = 1.0
    lam: float = 0.95
    #: KL to the reference: gae / rloo put it into the reward (kl_estimator per token); grpo adds
    #: kl_coef * k3 to the loss. 0 = no KL term (it is still measured)
    kl_coef: float = 0.05
    #: per-token estimator in the reward: k1 = log π - log π_ref, k3 = the non-negative one
    kl_estimator: Literal["k1", "k3"] = "k1"
    #: adaptive KL controller (Ziegler et al. 2019): steer kl_coef toward target_kl (nats per response); 0 = fixed
    target_kl: float = 0.0
    #: horizon (in responses) of the adaptive controller
    kl_horizon: int = 10000
    #: token = every response token weighs the same in a minibatch; sequence = every response weighs the
    #: same (its tokens averaged first)
    loss_average: Literal["token", "sequence"] = "token"
    #: AdamW and the warmup-cosine LR over iterations (policy and value adapters)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=0, weight_decay=0.0,
                                                                   beta2=0.999, min_lr_ratio=1.0))
    #: loss-spike detection per update (windows and ladder counted in iterations); a non-finite loss skips its update
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    #: checkpoint interval (in iterations) and retention
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(every=10))
    #: held-out prompts answered (greedy) by the SFT model and the trained one: reward-model win rate,
    #: checkable-task accuracy, KL to the SFT model; 0 = none
    judge_prompts: int = 64
    #: responses sampled per checkable held-out prompt (at the training temperature) for the sampled accuracy
    #: before / after; 0 = greedy accuracy only
    eval_samples: int = 8
    #: sample answers (before / after) shown in report.md
    samples_shown: int = 4
    #: base seed: adapter and value head init, sampling and minibatch order derive from it
    seed: int = 0
    #: where to train: auto = CUDA when available, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        self.check_loop("ppo")
        _need(self.max_steps >= 1, f"ppo.max_steps={self.max_steps} must be at least 1 (iterations)")
        for name in ("prompts_per_iteration", "samples", "minibatch_size", "ppo_epochs",
                     "max_new_tokens", "rollout_batch_size", "max_length", "kl_horizon"):
            _need(getattr(self, name) >= 1, f"ppo.{name}={getattr(self, name)} must be at least 1")
        for name in ("check_weight", "unfinished_penalty", "vf_coef", "kl_coef",
                     "target_kl", "judge_prompts", "eval_samples", "samples_shown"):
            _need(getattr(self, name) >= 0, f"ppo.{name}={getattr(self, name)} is negative; use 0 or more")
        _need(self.temperature > 0, f"ppo.temperature={self.temperature} must be positive (e.g. 1.0)")
        _need(0 < self.top_p <= 1, f"ppo.top_p={self.top_p} must be within (0, 1]")
        _need(0 < self.clip < 1, f"ppo.clip={self.clip} must be within (0, 1) (e.g. 0.2)")
        _need(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "ppo.gamma and ppo.lam must be within [0, 1]")
        _need(self.max_new_tokens < self.max_length,
              f"ppo.max_new_tokens={self.max_new_tokens} leaves no room for the prompt in ppo.max_length="
              f"{self.max_length}; raise max_length or lower max_new_tokens")
        _need(self.advantage == "gae" or self.samples >= 2,
              f"ppo.advantage={self.advantage} compares the samples of a prompt: set ppo.samples to 2 or more (e.g. 4)")
        _need(self.minibatch_size % self.samples == 0,
              f"ppo.minibatch_size={self.minibatch_size} must be a multiple of ppo.samples={self.samples}")
        _need(self.minibatch_size <= self.prompts_per_iteration * self.samples,
              f"ppo.minibatch_size={self.minibatch_size} exceeds the {self.prompts_per_iteration * self.samples} "
              "responses of an iteration (prompts_per_iteration x samples)")
