"""lr_at: linear warmup then cosine to min_lr, checked at chosen steps against values worked out by hand."""
from __future__ import annotations

import math

import pytest

from gristmill.train.schedule import lr_at

KW = dict(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)


@pytest.mark.parametrize("step, want", [
    (0, 1e-4),  # warmup: lr * (step + 1) / warmup
    (4, 5e-4),
    (9, 1e-3),  # last warmup step reaches the peak
    (10, 1e-3),  # cosine starts at the peak
    (60, 1e-4 + 0.5 * 9e-4),  # halfway through the decay: midway between peak and floor
    (35, 1e-4 + 0.5 * (1 + math.cos(math.pi * 0.25)) * 9e-4),
    (110, 1e-4),  # the floor: 10 % of the peak
    (500, 1e-4),  # and it stays there
])
def test_lr_at_matches_warmup_cosine(step, want):
    assert lr_at(step, **KW) == pytest.approx(want, rel=1e-12)


def test_shape_rises_then_falls_monotonically():
    lrs = [lr_at(s, **KW) for s in range(111)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert min(lrs) == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)


def test_no_warmup_and_custom_floor():
    assert lr_at(0, lr=2.0, warmup_steps=0, max_steps=4, min_lr_ratio=0.0) == pytest.approx(2.0)
    assert lr_at(2, lr=2.0, warmup_steps=0, max_steps=4, min_lr_ratio=0.0) == pytest.approx(1.0)
    assert lr_at(4, lr=2.0, warmup_steps=0, max_steps=4, min_lr_ratio=0.0) == 0.0
