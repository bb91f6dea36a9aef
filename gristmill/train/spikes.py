"""Loss-spike detection: rolling z-scores of loss and grad norm, and the skip -> rollback -> stop ladder."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from gristmill.train import TrainError
from gristmill.train.config import SpikeConfig


class SpikeError(TrainError):
    """Training kept spiking after pretrain.max_rollbacks rollbacks; the run stops."""


Action = Literal["ok", "skip", "rollback", "stop"]


@dataclass
class Verdict:
    action: Action  # ok: apply the update; skip: drop it; rollback: restore a checkpoint; stop: give up
    reason: str  # "" when ok
    z_loss: float | None  # None until the window is full (or for a non-finite value)
    z_grad: float | None


def _z(window: list[float], x: float, min_std: float) -> float:
    n = len(window)
    mean = sum(window) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in window) / n)
    return (x - mean) / max(std, min_std * abs(mean), 1e-12)


class SpikeDetector:
    """Decides, before each optimizer update, whether to apply it.

    Only accepted steps after the LR warmup enter the rolling windows, so a spike cannot raise the
    bar for the next one.
    The ladder: an isolated spike skips its update; a non-finite loss or grad norm, or `k` spikes
    within `m` steps, asks for a rollback; a rollback beyond `max_rollbacks` says stop.
    """

    def __init__(self, settings: SpikeConfig, *, after_step: int = 0):
        self.s = settings
        self.after_step = after_step  # steps up to this one (the LR warmup) are not judged and do not fill the window
        self.losses: list[float] = []  # last `window` accepted losses
        self.grad_norms: list[float] = []  # and their grad norms (before clipping)
        self.spike_steps: list[int] = []  # steps of spikes since the last rollback, newest last
        self.rollbacks = 0
        self.lr_low_until = 0  # steps below this run at lr * lr_factor

    def observe(self, step: int, loss: float, grad_norm: float) -> Verdict:
        s = self.s
        nonfinite = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if nonfinite:
            z_loss = z_grad = None
            reason = f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'}"
        elif step <= self.after_step:  # warmup: the LR ramp moves both signals on purpose
            return Verdict("ok", "", None, None)
        else:
            warm = len(self.losses) >= s.window
            z_loss = _z(self.losses, loss, s.min_std) if warm else None
            z_grad = _z(self.grad_norms, grad_norm, s.min_std_grad) if warm else None
            over = [(name, z) for name, z in (("loss", z_loss), ("grad norm", z_grad)) if z is not None and z > s.z]
            if not over:
                self.losses = (self.losses + [loss])[-s.window:]
                self.grad_norms = (self.grad_norms + [grad_norm])[-s.window:]
                return Verdict("ok", "", z_loss, z_grad)
            reason = " and ".join(f"{name} z={z:.1f}" for name, z in over) + f" > {s.z:g}"
        self.spike_steps = [t for t in self.spike_steps if t > step - s.m] + [step]
        repeated = len(self.spike_steps) >= s.k
        if not (nonfinite or repeated):
            return Verdict("skip", reason, z_loss, z_grad)
        if repeated and not nonfinite:
            reason += f" ({len(self.spike_steps)} spikes within {s.m} steps)"
        if self.rollbacks >= s.max_rollbacks:
            return Verdict("stop", reason, z_loss, z_grad)
        self.rollbacks += 1
        return Verdict("rollback", reason, z_loss, z_grad)

    def after_rollback(self, to_step: int, restored: dict[str, Any]) -> None:
        """Take the rolling windows back to the checkpoint's (`restored` is its state_dict); keep the
        rollback count; lower the LR for the next `lr_steps` steps."""
        self.losses = [float(v) for v in restored.get("losses", [])]
        self.grad_norms = [float(v) for v in restored.get("grad_norms", [])]
        self.spike_steps = []
        self.lr_low_until = to_step + self.s.lr_steps

    def lr_scale(self, step: int) -> float:
        return self.s.lr_factor if step < self.lr_low_until else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "grad_norms": list(self.grad_norms), "spike_steps": list(self.spike_steps),
                "rollbacks": self.rollbacks, "lr_low_until": self.lr_low_until}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.losses = [float(v) for v in d["losses"]]
        self.grad_norms = [float(v) for v in d["grad_norms"]]
        self.spike_steps = [int(v) for v in d["spike_steps"]]
        self.rollbacks = int(d["rollbacks"])
        self.lr_low_until = int(d["lr_low_until"])


def spike_event(step: int, v: Verdict, loss: float, grad_norm: float) -> dict[str, Any]:
    """The record of a spike the ladder acted on (its action, reason, values and z-scores; non-finite ones as None)."""
    def num(x: float | None) -> float | None:
        return x if x is None or math.isfinite(x) else None

    return {"step": step, "kind": "spike", "action": v.action, "reason": v.reason, "loss": num(loss),
            "grad_norm": num(grad_norm), "z_loss": num(v.z_loss), "z_grad": num(v.z_grad)}


def event_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """spikes_skipped and rollbacks of a run's events, for its manifest."""
    return {"spikes_skipped": sum(1 for e in events if e["action"] == "skip"),
            "rollbacks": sum(1 for e in events if e["action"] == "rollback")}
