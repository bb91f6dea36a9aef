"""The alignment losses, one small function each: token NLL (SFT), Bradley-Terry and reward centring (reward model)."""
from __future__ import annotations

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
