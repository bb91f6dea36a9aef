"""Exact resume: a run stopped midway and started again gives bit-identical losses and weights to one never stopped."""
from __future__ import annotations

import pytest

from gristmill.manifests import read_manifest
from gristmill.train.checkpoint import list_checkpoints
from gristmill.pretrain.run import run_pretrain
from faults import Killed, kill_at
from pretrain_helpers import make_tokens, rows, tiny

CFG = dict(max_steps=16, checkpoint={"every": 5}, eval_every=4)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokens(tmp_path_factory.mktemp("resume") / "tok")


@pytest.fixture(scope="module")
def uninterrupted(tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "straight"
    return out, run_pretrain(tiny(**CFG), {"data": [tok]}, out)


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(tok, uninterrupted, tmp_path):
    straight_dir, straight = uninterrupted
    out = tmp_path / "stopped"
    with pytest.raises(Killed):
        run_pretrain(tiny(**CFG), {"data": [tok]}, out, hooks=kill_at(13))  # between checkpoints 10 and 15
    assert not (out / "manifest.json").exists()
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [5, 10]
    assert max(rows(out)) == 13  # the stopped run got further than its last checkpoint

    resumed = run_pretrain(tiny(**CFG), {"data": [tok]}, out)
    assert resumed.metrics["resumed_from_step"] == 10 and resumed.id == straight.id
    a, b = rows(straight_dir), rows(out)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    for step in range(1, 17):  # bit-identical, not approximately equal
        for key in ("loss", "grad_norm", "lr", "eval_loss", "tokens"):
            assert a[step].get(key) == b[step].get(key), (step, key)
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]
    assert resumed.metrics["final_train_loss"] == straight.metrics["final_train_loss"]
    # the final weights are the same bytes
    assert (read_manifest(out).output("model/model.safetensors").sha256
            == straight.output("model/model.safetensors").sha256)


def test_other_runs_checkpoints_are_not_resumed_and_force_starts_clean(tok, tmp_path):
    out = tmp_path / "pt"
    with pytest.raises(Killed):
        run_pretrain(tiny(**CFG), {"data": [tok]}, out, hooks=kill_at(6))
    # another config: the checkpoints belong to another run id and are discarded
    with pytest.raises(Killed):
        run_pretrain(tiny(**CFG, optim={"lr": 2e-3}), {"data": [tok]}, out, hooks=kill_at(1))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [0]
    assert sorted(rows(out)) == [1]
    # the same config again, with force: starts from step 0 despite its own step-5 checkpoint
    with pytest.raises(Killed):
        run_pretrain(tiny(**CFG, optim={"lr": 2e-3}), {"data": [tok]}, out, hooks=kill_at(6))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [0, 5]
    m = run_pretrain(tiny(**CFG, optim={"lr": 2e-3}), {"data": [tok]}, out, force=True)
    assert m.metrics["resumed_from_step"] is None and m.metrics["steps"] == 16
