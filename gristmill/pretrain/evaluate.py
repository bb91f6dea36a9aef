"""Measuring a base model: the causal-LM loss, validation loss / perplexity, FLOPs per token."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gristmill.train.parallel import Parallel


def causal_lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy, number of targets) over a (B, T+1) window batch:
    inputs tokens[:, :-1], targets tokens[:, 1:]."""
    logits = model(input_ids=tokens[:, :-1], use_cache=False).logits  # (B, T, V)
    targets = tokens[:, 1:]
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum"), targets.numel()


def validation_loss(model: torch.nn.Module, batches: list[np.ndarray], par: Parallel, dtype: str) -> float | None:
    """Mean token loss over this rank's fixed val batches, averaged over all ranks' tokens; None without val data."""
    from gristmill.train.trainer import evaluate_loss

    def loss_fn(m: torch.nn.Module, b: np.ndarray) -> tuple[torch.Tensor, int]:
        return causal_lm_loss(m, torch.from_numpy(b).to(par.device))

    return evaluate_loss(model, par, batches, loss_fn, dtype).get("eval_loss")


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else float("inf")


def flops_per_token(*, params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls (forward + backward) plus 12·L·d·T for
    attention scores and values (PaLM, appendix B). N counts a tied embedding once (as the head)."""
    return 6.0 * params + 12.0 * num_layers * hidden_size * seq_len


def describe(model: Any) -> str:
    c = model.config
    return (f"Llama {c.num_hidden_layers} layers x {c.hidden_size} wide, {c.num_attention_heads} heads, "
            f"vocab {c.vocab_size}, context {c.max_position_embeddings}")
