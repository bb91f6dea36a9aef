"""One RL iteration's math over a batch of rollouts: old / reference log-probs and values, KL-shaped advantages (GAE, GRPO, RLOO), clipped minibatch updates."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

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


def advantages(exp: Experience, *, kind: str, kl_coef: float, kl_estimator: str, gamma: float, lam: float,
               whiten: bool) -> None:
    """Fill exp.advantages, exp.returns (gae) and exp.kl.

    gae:  per-token reward r_t = -kl_coef * KL_t (kl_estimator), plus the score at each response's last
          token; GAE(γ, λ) against the value model; advantages whitened over the iteration when `whiten`.
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
        if whiten:
            adv = L.whiten(adv, mask)
        exp.advantages, exp.returns = adv[mask], ret[mask]
    elif kind == "grpo":
        exp.advantages = L.grpo_advantages(exp.scores, exp.k)[exp.owner]
    elif kind == "rloo":
        exp.advantages = L.rloo_advantages(exp.scores - kl_coef * exp.kl, exp.k)[exp.owner]
    else:
        raise ValueError(f"advantage kind {kind!r}")


def average(per_tok: torch.Tensor, owner: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """token: the mean over every token; sequence: the mean over responses of each one's token mean."""
    if how == "token":
        return per_tok.mean()
    sums = per_tok.new_zeros(len(lengths)).index_add(0, owner, per_tok)
    return (sums / lengths.to(per_tok)).mean()


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 = the value model predicts the returns, <= 0 = no better than their mean."""
    var = returns.var(unbiased=False)
    return float("nan") if var == 0 else (1 - (returns - values).var(unbiased=False) / var).item()


def update(exp: Experience, cfg: Any, *, policy: Any, value: Any | None, optimizer: torch.optim.Optimizer,
           policy_params: list[torch.Tensor], value_params: list[torch.Tensor], kl_coef: float, seed: int,
           pad: int, device: Any, on_event: Callable[[dict], None]) -> dict[str, float]:
    """cfg.ppo_epochs passes of clipped updates over the iteration's responses, in minibatches of
    cfg.minibatch_size responses (whole groups), shuffled by a generator seeded with `seed` + epoch.

    Policy loss: the clipped surrogate (- cfg.entropy_coef * entropy; grpo: + kl_coef * k3 to the
    reference), averaged per cfg.loss_average; value loss (gae): the clipped squared error to the returns,
    weighted by cfg.vf_coef. Policy and value gradients are clipped separately (different scales). A
    non-finite loss or gradient skips the minibatch and is reported through `on_event`."""
    k, n_groups = exp.k, len(exp.groups)
    per_mb = cfg.minibatch_size // k
    sums: dict[str, float] = {}
    count = 0
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n_groups, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, n_groups, per_mb):
            gids = order[start:start + per_mb]
            seqs = [g * k + j for g in gids for j in range(k)]
            idx = exp.tokens_of(seqs)
            lengths = exp.lengths[seqs]
            owner = torch.repeat_interleave(torch.arange(len(seqs)), lengths).to(device)
            b = collate_logps([exp.groups[g] for g in gids], pad_id=pad, max_length=cfg.max_length, packed=True,
                              device=device)
            batch = {key: b[key] for key in FORWARD_KEYS}
            logp, ent = policy(**batch, with_entropy=True)  # (n,) each
            old, adv = exp.old_logp[idx].to(device), exp.advantages[idx].to(device)
            pl, clipped = L.ppo_policy_loss(logp, old, adv, clip=cfg.clip)
            per_tok = pl - cfg.entropy_coef * ent
            kl3 = L.kl_penalty(logp, exp.ref_logp[idx].to(device), "k3")
            if cfg.advantage == "grpo" and kl_coef > 0:
                per_tok = per_tok + kl_coef * kl3
            loss = average(per_tok, owner, lengths.to(device), cfg.loss_average)
            stats = {"policy_loss": loss.detach(), "clipfrac": clipped.mean(),
                     "approx_kl": 0.5 * ((logp.detach() - old) ** 2).mean(), "entropy": ent.detach().mean()}
            if value is not None:
                v = value(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                          attention_mask=batch["attention_mask"], last=batch["pos"])  # (n,)
                vl = L.ppo_value_loss(v, exp.values[idx].to(device), exp.returns[idx].to(device), clip=cfg.value_clip)
                value_loss = average(vl, owner, lengths.to(device), cfg.loss_average)
                loss = loss + cfg.vf_coef * value_loss
                stats["value_loss"] = value_loss.detach()
            loss.backward()
            norms = [torch.nn.utils.clip_grad_norm_(ps, cfg.optim.clip if cfg.optim.clip > 0 else math.inf)
                     for ps in (policy_params, value_params) if ps]
            values = torch.stack([loss.detach(), *norms, *stats.values()]).tolist()  # one sync
            if not all(math.isfinite(x) for x in values[:1 + len(norms)]):
                optimizer.zero_grad(set_to_none=True)
                on_event({"epoch": epoch, "minibatch": start // per_mb, "action": "skip",
                          "reason": "non-finite loss or gradient"})
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row = dict(zip(stats, values[1 + len(norms):]))
            row["grad_norm"] = values[1]
            if value_params:
                row["value_grad_norm"] = values[2]
            for key, x in row.items():
                sums[key] = sums.get(key, 0.0) + x
            count += 1
    return {key: x / count for key, x in sums.items()} if count else {}
