"""One RL iteration's math over a batch of rollouts: old / reference log-probs and values, KL-shaped advantages (GAE, GRPO, RLOO), the clipped minibatch loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gristmill.align import losses as L
from gristmill.align.chat import Encoded
from gristmill.align.logprobs import collate_logps

FORWARD_KEYS = ("input_ids", "position_ids", "attention_mask", "pos", "target")


@dataclass
class Experience:
    """An iteration's responses, flat over their tokens: sequence s owns tokens offsets[s] : offsets[s] + lengths[s]."""
    groups: list[list[Encoded]]  # P prompts x k responses, the prompt shared within a group
    k: int
    lengths: torch.Tensor  # (S,) response tokens per sequence
    scores: torch.Tensor  # (S,) the reward (model / checker, penalties, whitening) before the KL term
    old_logp: torch.Tensor  # (N,) the policy's log-probs when sampled (recomputed by the training forward)
    ref_logp: torch.Tensor  # (N,)
    entropy: torch.Tensor  # (N,) the policy's entropy at each response position, nats
    values: torch.Tensor | None  # (N,) V(prefix before each token); gae only
    advantages: torch.Tensor | None = None  # (N,)
    returns: torch.Tensor | None = None  # (N,) gae only
    kl: torch.Tensor | None = None  # (S,) Σ_t k1: each response's KL(π || π_ref) estimate, nats

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cumsum(self.lengths, 0) - self.lengths

    @property
    def owner(self) -> torch.Tensor:  # (N,) sequence of each token
        return torch.repeat_interleave(torch.arange(len(self.lengths)), self.lengths)

    def tokens_of(self, seqs: list[int]) -> torch.Tensor:
        """Flat token indices of sequences `seqs`, in their order (what collate_logps yields for them)."""
        off, n = self.offsets, self.lengths
        return torch.cat([torch.arange(off[s], off[s] + n[s]) for s in seqs])


def to_rows(flat: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, T) right-padded rows of a flat (N,) per-token tensor, and the (S, T) mask of real tokens."""
    T = int(lengths.max())
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rows = flat.new_zeros(len(lengths), T)
    rows[mask] = flat
    return rows, mask


def per_token(module: Any, groups: list[list[Encoded]], *, chunk: int, pad: int, max_length: int,
              device: Any, **kw: Any) -> Any:
    """module(**batch) over the groups, `chunk` groups per forward, concatenated to (N,) (a tuple of them when
    the module returns one). `module` takes collate_logps's batch: TokenLogps, or a value scorer (last=pos)."""
    outs = []
    for i in range(0, len(groups), chunk):
        b = collate_logps(groups[i:i + chunk], pad_id=pad, max_length=max_length, packed=True, device=device)
        outs.append(module(**{k: b[k] for k in FORWARD_KEYS}, **kw))
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def advantages(exp: Experience, *, kind: str, kl_coef: float, kl_estimator: str, gamma: float, lam: float) -> None:
    """Fill exp.advantages, exp.returns (gae) and exp.kl.

    gae:  per-token reward r_t = -kl_coef * KL_t (kl_estimator), plus the score at each response's last
          token; GAE(γ, λ) against the value model; advantages whitened over the iteration.
    grpo: (score - group mean) / group std, the same for every token of a response (KL goes into the loss).
    rloo: (score - kl_coef * Σ_t k1) minus the mean of the other k - 1 responses to the prompt.
    """
    kl_tok = L.kl_penalty(exp.old_logp, exp.ref_logp, "k1")  # (N,)
    exp.kl = torch.zeros(len(exp.lengths)).index_add(0, exp.owner, kl_tok)  # (S,)
    if kind == "gae":
        shaped = -kl_coef * L.kl_penalty(exp.old_logp, exp.ref_logp, kl_estimator)
        rewards, mask = to_rows(shaped, exp.lengths)  # (S, T)
        rewards[torch.arange(len(exp.lengths)), exp.lengths - 1] += exp.scores
        values, _ = to_rows(exp.values, exp.lengths)
        adv, ret = L.gae(rewards, values, mask, gamma=gamma, lam=lam)
        adv = L.whiten(adv, mask)
        exp.advantages, exp.returns = adv[mask], ret[mask]
    elif kind == "grpo":
        exp.advantages = L.grpo_advantages(exp.scores, exp.k)[exp.owner]
    elif kind == "rloo":
        exp.advantages = L.rloo_advantages(exp.scores - kl_coef * exp.kl, exp.k)[exp.owner]
    else:
        raise ValueError(f"advantage kind {kind!r}")


def summed(per_tok: torch.Tensor, owner: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """The loss summed over its units: token = every token weighs the same (units: tokens); sequence = every
    response weighs the same (units: responses, each its tokens' mean). The training core divides by the units."""
    if how == "token":
        return per_tok.sum()
    sums = per_tok.new_zeros(len(lengths)).index_add(0, owner, per_tok)
    return (sums / lengths.to(per_tok)).sum()


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 = the value model predicts the returns, <= 0 = no better than their mean."""
    var = returns.var(unbiased=False)
    return float("nan") if var == 0 else (1 - (returns - values).var(unbiased=False) / var).item()


def minibatches(exp: Experience, cfg: Any, seed: int) -> list[list[int]]:
    """cfg.ppo_epochs passes over the iteration's prompt groups, in minibatches of cfg.minibatch_size responses
    (whole groups), shuffled by a generator seeded with `seed` + epoch: the group ids of each minibatch."""
    per_mb = cfg.minibatch_size // exp.k
    out = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(len(exp.groups), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out += [order[i:i + per_mb] for i in range(0, len(order), per_mb)]
    return out


def minibatch_loss(exp: Experience, gids: list[int], cfg: Any, *, policy: Any, value: Any | None, kl_coef: float,
                   pad: int, device: Any) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """(loss summed over the units, units, stats summed the same way) of the responses of groups `gids`, for
    the training core's update (it divides by the units, so the gradient is the mean).

    Policy loss: the clipped surrogate (grpo: + kl_coef * k3 to the reference); value loss (gae): the clipped
    squared error to the returns, weighted by cfg.vf_coef; units per cfg.loss_average (tokens or responses)."""
    k = exp.k
    seqs = [g * k + j for g in gids for j in range(k)]
    idx = exp.tokens_of(seqs)
    lengths = exp.lengths[seqs].to(device)
    owner = torch.repeat_interleave(torch.arange(len(seqs), device=device), lengths)
    b = collate_logps([exp.groups[g] for g in gids], pad_id=pad, max_length=cfg.max_length, packed=True, device=device)
    batch = {key: b[key] for key in FORWARD_KEYS}
    logp, ent = policy(**batch, with_entropy=True)  # (n,) each
    old, adv = exp.old_logp[idx].to(device), exp.advantages[idx].to(device)
    per_tok, clipped = L.ppo_policy_loss(logp, old, adv, clip=cfg.clip)
    if cfg.advantage == "grpo" and kl_coef > 0:
        per_tok = per_tok + kl_coef * L.kl_penalty(logp, exp.ref_logp[idx].to(device), "k3")

    def total(x: torch.Tensor) -> torch.Tensor:
        return summed(x, owner, lengths, cfg.loss_average)

    loss = total(per_tok)
    stats = {"policy_loss": loss.detach(), "clipfrac": total(clipped.float()),
             "approx_kl": total(0.5 * (logp.detach() - old) ** 2), "entropy": total(ent.detach())}
    if value is not None:
        v = value(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                  attention_mask=batch["attention_mask"], last=batch["pos"])  # (n,)
        vl = total(L.ppo_value_loss(v, exp.values[idx].to(device), exp.returns[idx].to(device), clip=cfg.clip))
        loss = loss + cfg.vf_coef * vl
        stats["value_loss"] = vl.detach()
    units = len(idx) if cfg.loss_average == "token" else len(seqs)
    return loss, units, stats
