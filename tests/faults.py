"""Fault injection for the training-loop tests: a NaN loss, a batch of random tokens, an LR spike, a simulated kill."""
from __future__ import annotations

import numpy as np

from gristmill.train.loop import Hooks


class Killed(Exception):
    """What a simulated kill raises (after a completed step, as a SIGKILL between steps would leave it)."""


class Faults(Hooks):
    """Faults at given 1-based steps; active until the first rollback, or always with `repeat` (to reach max_rollbacks)."""

    def __init__(self, *, nan_at: int | None = None, garbage_at: int | None = None, vocab_size: int = 512,
                 lr_spike: float = 1.0, lr_spike_steps: int = 0, repeat: bool = False, kill_after: int | None = None,
                 seed: int = 0):
        self.nan_at, self.garbage_at, self.vocab_size = nan_at, garbage_at, vocab_size
        self.lr_spike, self.lr_spike_steps, self.repeat = lr_spike, lr_spike_steps, repeat
        self.kill_after, self.seed = kill_after, seed

    def _on(self, rollbacks: int) -> bool:
        return self.repeat or rollbacks == 0

    def loss(self, step, loss, rollbacks):
        return loss * float("nan") if step == self.nan_at and self._on(rollbacks) else loss

    def batches(self, step, batches, rollbacks):
        if step != self.garbage_at or not self._on(rollbacks):
            return batches
        rng = np.random.default_rng([self.seed, step, 7])
        return [rng.integers(0, self.vocab_size, size=b.shape, dtype=np.int64) for b in batches]

    def lr(self, step, lr, rollbacks):
        g = self.garbage_at
        if g is None or not self._on(rollbacks) or not (g <= step < g + self.lr_spike_steps):
            return lr
        return lr * self.lr_spike

    def after_step(self, step):
        if step == self.kill_after:
            raise Killed(f"simulated kill after step {step}")


def kill_at(step: int) -> Faults:
    return Faults(kill_after=step)
