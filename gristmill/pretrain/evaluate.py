"""Measuring: the causal-LM loss, validation loss / perplexity, FLOPs per token and MFU."""
from __future__ import annotations

import contextlib
import math
from typing import Any, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from gristmill.pretrain import parallel
from gristmill.pretrain.parallel import Parallel

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched against torch.cuda.get_device_name().
_PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0), ("B200", 2250.0),
                     ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0),
                     ("A10", 125.0), ("L4", 121.0), ("4090", 165.0), ("3090", 71.0), ("V100", 125.0), ("T4", 65.0))


def causal_lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy, number of targets) over a (B, T+1) window batch:
    inputs tokens[:, :-1], targets tokens[:, 1:]."""
    logits = model(input_ids=tokens[:, :-1], use_cache=False).logits  # (B, T, V)
    targets = tokens[:, 1:]
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum"), targets.numel()


def autocast_for(device: torch.device, dtype: str) -> ContextManager:
    """bf16 autocast on CUDA when dtype is auto; fp32 on CPU unless bfloat16 is asked for."""
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: list[np.ndarray], par: Parallel, dtype: str) -> float | None:
    """Mean token loss over this rank's fixed val batches, averaged over all ranks' tokens; None without val data."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=par.device)  # (sum of token losses, tokens)
    for b in batches:
        x = torch.from_numpy(b).to(par.device)
        with autocast_for(par.device, dtype):
            loss_sum, n = causal_lm_loss(model, x)
        total += torch.stack([loss_sum.double(), torch.tensor(float(n), dtype=torch.float64, device=par.device)])
    model.train(was_training)
    total = parallel.sum_across(par, total)
    s, n = total.tolist()
    return s / n if n else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else float("inf")


def flops_per_token(*, params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls (forward + backward) plus 12·L·d·T for
    attention scores and values (PaLM, appendix B). N counts a tied embedding once (as the head)."""
    return 6.0 * params + 12.0 * num_layers * hidden_size * seq_len


def peak_flops(device: torch.device, peak_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the configured value, else a table lookup by GPU name; None on CPU / unknown."""
    if peak_tflops > 0:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in _PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_token: float, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of all devices."""
    if not peak:
        return None
    return tokens_per_s * flops_token / (peak * world_size)


def describe(model: Any) -> str:
    c = model.config
    return (f"Llama {c.num_hidden_layers} layers x {c.hidden_size} wide, {c.num_attention_heads} heads, "
            f"vocab {c.vocab_size}, context {c.max_position_embeddings}")
