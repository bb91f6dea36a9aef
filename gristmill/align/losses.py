"""The alignment losses, one small function each: token NLL (SFT), Bradley-Terry (reward), the DPO family, and the RL pieces (KL penalties, GAE, GRPO, RLOO, PPO clipping)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token negative log-likelihood, number of targets).

    logits: (N, V) at the positions that predict a supervised token; targets: (N,) those tokens.
    The log-softmax runs in fp32 whatever the autocast dtype.
    """
    return F.cross_entropy(logits.float(), targets, reduction="sum"), targets.numel()


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                  margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pair loss -log sigmoid(r_chosen - r_rejected - margin), shapes (B,).

    The negative log-likelihood of "chosen beats rejected" under P = sigmoid(r_c - r_r); a margin
    asks chosen to win by at least that much (Llama 2's graded preferences)."""
    return -F.logsigmoid(r_chosen.float() - r_rejected.float() - margin)


def reward_centering(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair (r_chosen + r_rejected)^2, shapes (B,): with a small weight it keeps rewards centred on 0
    (Bradley-Terry alone only fixes differences, so the level drifts)."""
    return (r_chosen.float() + r_rejected.float()) ** 2


# ------------------------------------------------------------------------------------------------
# Preference optimisation. Arguments are per-pair (or per-example) completion log-probs, shapes (B,):
# sums over the completion's tokens unless the docstring says means. Each returns the per-pair loss (B,).


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Sigmoid DPO (Rafailov et al. 2023), with conservative DPO's label smoothing ε:

        h = [log π(y_w|x) - log π_ref(y_w|x)] - [log π(y_l|x) - log π_ref(y_l|x)]
        loss = -(1 - ε) log σ(β h) - ε log σ(-β h)

    ε = 0 is plain DPO; ε > 0 treats each label as flipped with probability ε."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023): (h - 1 / (2β))^2, h as in dpo_loss but from per-token *means* of the log-probs
    (as TRL does), so that long completions do not dominate the squared term."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return (h - 1 / (2 * beta)) ** 2


def simpo_loss(policy_chosen_mean: torch.Tensor, policy_rejected_mean: torch.Tensor, *, beta: float,
               gamma: float) -> torch.Tensor:
    """SimPO (Meng et al. 2024): no reference model; length-normalised log-probs (per-token means) and a
    target margin γ:  -log σ(β (mean log π(y_w|x) - mean log π(y_l|x)) - γ). The paper uses β ≈ 2-2.5."""
    return -F.logsigmoid(beta * (policy_chosen_mean - policy_rejected_mean) - gamma)


def orpo_loss(policy_chosen_mean: torch.Tensor, policy_rejected_mean: torch.Tensor, *, lam: float) -> torch.Tensor:
    """ORPO (Hong et al. 2024): no reference model; SFT on the chosen plus an odds-ratio term:

        NLL(y_w) - λ log σ(log odds(y_w) - log odds(y_l)),  odds(y) = P / (1 - P),  P = exp(mean log π(y|x))

    NLL(y_w) is the per-token mean (-policy_chosen_mean); log(1 - P) is computed as log1p(-exp(.))."""
    def log_odds(mean: torch.Tensor) -> torch.Tensor:
        return mean - torch.log1p(-torch.exp(mean.clamp(max=-1e-6)))

    return -policy_chosen_mean - lam * F.logsigmoid(log_odds(policy_chosen_mean) - log_odds(policy_rejected_mean))


def rpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, policy_chosen_mean: torch.Tensor, *, beta: float,
             alpha: float) -> torch.Tensor:
    """DPO plus α times the chosen completion's per-token NLL (RPO, Pang et al. 2024): the NLL term keeps
    the chosen log-prob from falling, the known failure of plain DPO."""
    return (dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)
            - alpha * policy_chosen_mean)


def kto_reference_point(policy_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """KTO's z0: an estimate of KL(π || π_ref) from completions paired with prompts they do not answer,
    max(0, mean(log π(y'|x) - log π_ref(y'|x))), detached (it is a baseline, not a training signal). Scalar."""
    return (policy_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto_loss(policy: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, *,
             beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024) on unpaired examples; r = log π(y|x) - log π_ref(y|x) (sums):

        desirable:   w_D (1 - σ(β (r - z0)))
        undesirable: w_U (1 - σ(β (z0 - r)))

    desirable: (B,) bool; z0: kto_reference_point. Per example (B,)."""
    r = policy - ref
    return torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))))


# ------------------------------------------------------------------------------------------------
# The preference losses as one table: the dpo stage's loss path, DPOConfig's choices of `loss` and its
# reference decision, and the tests all read PREFERENCE_LOSSES.


@dataclass(frozen=True)
class PreferenceInputs:
    """What a preference loss reads for B items, each (B,), in the aggregate its table entry `uses`:

    chosen, rejected: the policy's completion log-probs (unpaired: the example's completion, and another
    example's completion after this prompt, for KTO's reference point);
    ref_chosen, ref_rejected: the reference model's, None for a loss that needs no reference;
    chosen_mean: the chosen completion's per-token mean log-prob whatever `uses` says (the NLL terms);
    desirable: (B,) bool labels of unpaired examples, else None."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_mean: torch.Tensor
    desirable: torch.Tensor | None = None

    def kl_reference_point(self) -> torch.Tensor:
        """KTO's z0 from the mismatched completions (the `rejected` side of an unpaired item)."""
        return kto_reference_point(self.rejected, self.ref_rejected)


@dataclass(frozen=True)
class PreferenceLoss:
    """One preference objective and what it needs."""

    #: (inputs, the dpo settings: beta, label_smoothing, rpo_alpha, ...) -> the per-item loss (B,)
    fn: Callable[[PreferenceInputs, Any], torch.Tensor]
    #: reads the reference model's log-probs (cached or adapter-off); without it training needs no reference
    needs_reference: bool
    #: the log-prob aggregate compared: "sums" over the completion's tokens or per-token "means"
    uses: Literal["sums", "means"]
    #: single examples labelled desirable / undesirable instead of chosen / rejected pairs
    unpaired: bool
    #: one line for the docs and error messages
    description: str


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "dpo": PreferenceLoss(
        lambda x, c: dpo_loss(x.chosen, x.rejected, x.ref_chosen, x.ref_rejected, beta=c.beta,
                              label_smoothing=c.label_smoothing),
        needs_reference=True, uses="sums", unpaired=False,
        description="sigmoid DPO, with conservative DPO's label smoothing"),
    "ipo": PreferenceLoss(
        lambda x, c: ipo_loss(x.chosen, x.rejected, x.ref_chosen, x.ref_rejected, beta=c.beta),
        needs_reference=True, uses="means", unpaired=False,
        description="IPO: the squared distance of the log-ratio difference to 1 / (2 beta)"),
    "rpo": PreferenceLoss(
        lambda x, c: rpo_loss(x.chosen, x.rejected, x.ref_chosen, x.ref_rejected, x.chosen_mean, beta=c.beta,
                              alpha=c.rpo_alpha),
        needs_reference=True, uses="sums", unpaired=False,
        description="DPO plus rpo_alpha times the chosen completion's per-token NLL"),
    "simpo": PreferenceLoss(
        lambda x, c: simpo_loss(x.chosen, x.rejected, beta=c.beta, gamma=c.simpo_gamma),
        needs_reference=False, uses="means", unpaired=False,
        description="SimPO: length-normalised log-probs and a target margin, no reference"),
    "orpo": PreferenceLoss(
        lambda x, c: orpo_loss(x.chosen, x.rejected, lam=c.orpo_lambda),
        needs_reference=False, uses="means", unpaired=False,
        description="ORPO: NLL on the chosen plus an odds-ratio term, no reference"),
    "kto": PreferenceLoss(
        lambda x, c: kto_loss(x.chosen, x.ref_chosen, x.desirable, x.kl_reference_point(), beta=c.beta,
                              desirable_weight=c.kto_desirable_weight,
                              undesirable_weight=c.kto_undesirable_weight),
        needs_reference=True, uses="sums", unpaired=True,
        description="KTO on unpaired desirable / undesirable examples"),
}


# ------------------------------------------------------------------------------------------------
# Reinforcement learning from a reward (issue 10's stage builds on these). Per-token tensors are
# (B, T) over the response tokens, with `mask` 1 on real response tokens (a prefix of each row).


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from the log-probs of tokens sampled from π, (B, T):

        k1 = log π - log π_ref                      (unbiased, can be negative)
        k3 = exp(log π_ref - log π) - 1 - (log π_ref - log π)   (unbiased, >= 0, lower variance)"""
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.expm1(d) - d
    raise ValueError(f"kl kind {kind!r}: use 'k1' or 'k3'")


def whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (the mean added back when shift_mean=False); masked-out
    entries come back as 0. Population std, as the statistic of a whole batch."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + eps)
    return (out if shift_mean else out + mean) * m


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) per token, all (B, T):

        δ_t = r_t + γ V_{t+1} - V_t   (V after a row's last response token = 0)
        A_t = δ_t + γ λ A_{t+1}        returns_t = A_t + V_t

    r_t is the per-token reward (the KL penalty, plus the score at the last token). Returns (A, returns),
    0 outside the mask."""
    m = mask.to(values.dtype)
    r, v = rewards * m, values * m
    adv = torch.zeros_like(v)
    running = torch.zeros_like(v[:, 0])
    for t in range(v.shape[1] - 1, -1, -1):  # T steps backwards; each a (B,) vector operation
        next_v = v[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(running)
        delta = r[:, t] + gamma * next_v - v[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        adv[:, t] = running
    return adv, (adv + v) * m


def grpo_advantages(scores: torch.Tensor, k: int, *, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024): scores (N * k,), the k samples of each prompt contiguous; each sample's
    advantage is (r - mean) / (std + eps) within its group (sample std; a group of equal scores gets 0)."""
    g = scores.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): each sample's score minus the mean of the other k - 1 samples of its
    prompt, = k / (k - 1) * (r - group mean). scores (N * k,), groups contiguous."""
    if k < 2:
        raise ValueError("rloo needs k >= 2 samples per prompt")
    g = scores.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).view(-1)


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *,
                    clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate (Schulman et al. 2017) per token, (B, T):

        ratio = exp(log π - log π_old);  loss = -min(ratio A, clip(ratio, 1 - ε, 1 + ε) A)

    and the per-token indicator that clipping was active (for the clip fraction)."""
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *,
                   clip: float = 0.2) -> torch.Tensor:
    """The clipped value loss per token, (B, T): 0.5 max((V - R)^2, (V_old + clip(V - V_old, ±ε) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
