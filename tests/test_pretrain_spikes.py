"""The spike detector: rolling z-scores, and the ladder skip -> rollback -> stop, with serialisable state."""
from __future__ import annotations

import json
import math

import pytest

from gristmill.errors import GristmillError
from gristmill.train.config import SpikeConfig
from gristmill.train.spikes import SpikeDetector, SpikeError

S = SpikeConfig(window=5, z=4.0, min_std=0.01, k=3, m=10, lr_factor=0.5, lr_steps=20, max_rollbacks=2)


def warm(d: SpikeDetector, n: int = 5, start: int = 1) -> int:
    """Feed n ordinary steps (loss ~2.0, grad norm ~1.0 with a little noise)."""
    for i in range(n):
        assert d.observe(start + i, 2.0 + 0.01 * (i % 3), 1.0 + 0.02 * (i % 2)).action == "ok"
    return start + n


def test_quiet_until_the_window_is_full():
    d = SpikeDetector(S)
    # A huge value before the window is full is not judged (no statistics yet) ...
    assert d.observe(1, 50.0, 1.0).action == "ok"
    v = d.observe(2, 2.0, 1.0)
    assert v.action == "ok" and v.z_loss is None


def test_isolated_spike_skips_and_does_not_enter_the_window():
    d = SpikeDetector(S)
    step = warm(d)
    before = list(d.losses)
    v = d.observe(step, 5.0, 1.0)
    assert v.action == "skip" and v.z_loss > 4.0 and "loss z=" in v.reason
    assert d.losses == before  # a spike never raises the bar for the next one
    # z by hand: mean and population std of the window, std floored at 1 % of the mean
    mean = sum(before) / 5
    std = max(math.sqrt(sum((x - mean) ** 2 for x in before) / 5), 0.01 * mean)
    assert v.z_loss == pytest.approx((5.0 - mean) / std)


def test_grad_norm_spike_alone_counts():
    d = SpikeDetector(S)
    step = warm(d)
    v = d.observe(step, 2.0, 30.0)
    assert v.action == "skip" and "grad norm" in v.reason and v.z_grad > 4.0


def test_downward_moves_are_not_spikes():
    d = SpikeDetector(S)
    step = warm(d)
    assert d.observe(step, 0.5, 0.1).action == "ok"


@pytest.mark.parametrize("loss, norm", [(float("nan"), 1.0), (float("inf"), 1.0), (2.0, float("nan"))])
def test_non_finite_always_rolls_back_even_when_cold(loss, norm):
    d = SpikeDetector(S)
    v = d.observe(1, loss, norm)
    assert v.action == "rollback" and "non-finite" in v.reason and d.rollbacks == 1


def test_k_spikes_within_m_steps_roll_back_and_lower_the_lr():
    d = SpikeDetector(S)
    step = warm(d)
    verdicts = [d.observe(step + i, 9.0, 1.0) for i in range(3)]
    assert [v.action for v in verdicts] == ["skip", "skip", "rollback"]
    assert "3 spikes within 10 steps" in verdicts[2].reason and d.rollbacks == 1
    saved = {"losses": [2.0] * 5, "grad_norms": [1.0] * 5}
    d.after_rollback(4, saved)
    assert d.spike_steps == [] and d.losses == [2.0] * 5
    assert d.lr_scale(4) == 0.5 and d.lr_scale(23) == 0.5 and d.lr_scale(24) == 1.0


def test_spikes_further_apart_than_m_only_skip():
    d = SpikeDetector(S)
    step = warm(d)
    actions = []
    for i in range(3):
        actions.append(d.observe(step, 9.0, 1.0).action)
        step = warm(d, 6, step + 1)  # the next spike comes 7 steps later
    assert actions[:2] == ["skip", "skip"]
    assert actions[2] == "skip"  # spikes at t, t+7, t+14: never 3 within 10 steps


def test_stop_after_max_rollbacks():
    d = SpikeDetector(S)
    actions = [d.observe(i, float("nan"), 1.0).action for i in range(1, 4)]
    assert actions == ["rollback", "rollback", "stop"]
    assert issubclass(SpikeError, GristmillError)


def test_state_round_trips_through_json():
    d = SpikeDetector(S)
    step = warm(d)
    d.observe(step, 9.0, 1.0)
    d.observe(step + 1, float("nan"), 1.0)
    d.after_rollback(step - 2, d.state_dict())
    e = SpikeDetector(S)
    e.load_state_dict(json.loads(json.dumps(d.state_dict())))
    assert e.state_dict() == d.state_dict()
    # and the two now judge the same
    assert e.observe(step + 5, 2.5, 1.0) == d.observe(step + 5, 2.5, 1.0)


def test_warmup_steps_are_not_judged_and_do_not_fill_the_window():
    d = SpikeDetector(SpikeConfig(window=3, z=4.0), after_step=10)
    assert [d.observe(s, 50.0 if s == 5 else 2.0, 1.0).action for s in range(1, 11)] == ["ok"] * 10
    assert d.losses == []  # the window starts filling after warmup
    assert d.observe(3, float("nan"), 1.0).action == "rollback"  # non-finite is judged even in warmup
