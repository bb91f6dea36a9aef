"""The learning-rate schedule: linear warmup, then cosine decay to a floor; a pure function of the step."""
from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> float:
    """LR for optimizer step `step` (0-based).

    Warmup: lr * (step + 1) / warmup_steps, so step 0 already moves and step warmup_steps - 1 hits
    the peak. Then cosine from lr at step warmup_steps down to min_lr = lr * min_lr_ratio at
    step max_steps (and min_lr after it, should a run be extended).
    """
    min_lr = lr * min_lr_ratio
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
