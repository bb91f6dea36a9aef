"""Spike recovery with injected faults: a NaN rolls back, garbage data + an LR spike is skipped then rolled back,
and too many rollbacks stop the run with a clear error."""
from __future__ import annotations

import math

import pytest

from gristmill.errors import GristmillError
from gristmill.manifests import verify
from gristmill.pretrain.run import run_pretrain
from gristmill.train.spikes import SpikeError
from faults import Faults
from pretrain_helpers import make_tokens, rows, tiny

CFG = dict(max_steps=32, checkpoint={"every": 5}, eval_every=16)
G = 8  # windows per step: batch_size 8, one process, no accumulation


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("faults") / "tok")


@pytest.fixture(scope="module")
def clean(tok, tmp_path_factory):
    return run_pretrain(tiny(**CFG), {"data": [tok]}, tmp_path_factory.mktemp("faults") / "clean")


def test_nan_rolls_back_to_the_last_checkpoint_and_skips_the_data(tok, clean, tmp_path):
    out = tmp_path / "nan"
    m = run_pretrain(tiny(**CFG), {"data": [tok]}, out, hooks=Faults(nan_at=18))
    assert clean.events == []
    (e,) = m.events
    assert (e["step"], e["action"], e["to_step"]) == (18, "rollback", 15)
    assert "non-finite loss" in e["reason"] and e["loss"] is None
    # from the checkpoint's cursor through the spike's batch plus one margin batch
    assert e["skipped"] == [15 * G, 17 * G + 2 * G]
    assert m.metrics["rollbacks"] == 1 and m.metrics["windows_skipped"] == 4 * G
    r = rows(out)
    assert sorted(r) == list(range(1, 33)) and r[32]["loss"] is not None
    # replayed steps 16..18 trained on later data, with the LR lowered after the rollback
    assert r[16]["lr"] == pytest.approx(0.5 * scheduled_lr(clean, 16))
    final, ref = m.metrics["final_train_loss"], clean.metrics["final_train_loss"]
    assert math.isfinite(final) and abs(final - ref) < 0.15 * ref
    assert abs(m.metrics["val_loss"] - clean.metrics["val_loss"]) < 0.15 * clean.metrics["val_loss"]
    assert verify(out) == [] and "## Spike events" in (out / "report.md").read_text()


def scheduled_lr(clean, step):
    """The LR of (1-based) step `step` without any spike lowering."""
    from gristmill.train.schedule import lr_at

    c = clean.config["optim"]
    return lr_at(step - 1, lr=c["lr"], warmup_steps=c["warmup_steps"], max_steps=clean.config["max_steps"],
                 min_lr_ratio=c["min_lr_ratio"])


def test_garbage_batch_and_lr_spike_are_skipped_then_rolled_back(tok, clean, tmp_path):
    out = tmp_path / "garbage"
    from gristmill.tokenize.shards import ShardSet

    vocab = ShardSet.open(tok, "train", verify=False).vocab_size
    faults = Faults(garbage_at=20, vocab_size=vocab, lr_spike=30.0, lr_spike_steps=3)
    m = run_pretrain(tiny(**CFG), {"data": [tok]}, out, hooks=faults)
    actions = [(e["step"], e["action"]) for e in m.events]
    assert actions[0] == (20, "skip")  # random tokens: the loss jumps, the update is dropped
    assert "loss z=" in m.events[0]["reason"]
    rollbacks = [e for e in m.events if e["action"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["to_step"] == 20  # the step-20 state was saved before the damage
    final, ref = m.metrics["final_train_loss"], clean.metrics["final_train_loss"]
    assert math.isfinite(final) and abs(final - ref) < 0.15 * ref
    r = rows(out)
    assert r[20]["action"] == "skip" and r[32].get("action") is None


def test_too_many_rollbacks_stop_with_a_clear_error(tok, tmp_path):
    out = tmp_path / "doomed"
    cfg = tiny(**CFG, spike={"max_rollbacks": 2})
    with pytest.raises(SpikeError) as err:
        run_pretrain(cfg, {"data": [tok]}, out, hooks=Faults(nan_at=12, repeat=True))
    assert isinstance(err.value, GristmillError)
    msg = str(err.value)
    assert "step 12" in msg and "pretrain.spike.max_rollbacks=2" in msg and "checkpoints" in msg
    assert not (out / "manifest.json").exists()  # a failed stage never looks finished
    r = [e for e in rows(out).values() if e.get("action")]
    assert [x["action"] for x in r] == ["stop"]  # rows keep the last per step; the stop is the last word
