"""Checkpoints: exact round trip of weights, optimizer and RNG; tied weights; atomic folders; last K kept."""
from __future__ import annotations

import json
import random

import numpy as np
import torch

from gristmill.train.checkpoint import (capture_rng, list_checkpoints, load_checkpoint, restore_rng,
                                           save_checkpoint)


def tiny_model():
    from gristmill.pretrain.model import build_model, llama_config
    from pretrain_helpers import tiny

    return build_model(llama_config(tiny(), vocab_size=300, eos_id=0), seed=0)


def trained(model):
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    x = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_round_trip_is_exact_and_continues_identically(tmp_path):
    model = tiny_model()
    opt = trained(model)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = save_checkpoint(tmp_path, 7, parts={"model": model.state_dict()}, optimizer=opt.state_dict(),
                           state={"loop": {"cursor": 56}}, rng=[capture_rng()], keep=3)
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                      "rng.safetensors", "state.json"]
    assert all(not p.name.endswith(".pkl") for p in path.iterdir())

    other = tiny_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.5)
    ck = load_checkpoint(path)
    other.load_state_dict(ck.parts["model"])
    opt2 = torch.optim.AdamW([{"params": [p for p in other.parameters() if p.dim() >= 2]},
                              {"params": [p for p in other.parameters() if p.dim() < 2]}])
    opt2.load_state_dict(ck.optimizer)
    restore_rng(ck.rng[0])
    assert ck.step == 7 and ck.state["loop"] == {"cursor": 56}
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws
    assert other.lm_head.weight is other.model.embed_tokens.weight  # the tie survives loading
    for (n, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), n
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    # one more identical step on both gives bit-identical weights (optimizer moments restored exactly)
    x = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(1))
    for m, o in ((model, opt), (other, opt2)):
        m(input_ids=x, labels=x).loss.backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_tied_embedding_is_stored_once(tmp_path):
    from safetensors import safe_open

    model = tiny_model()
    opt = trained(model)
    path = save_checkpoint(tmp_path, 1, parts={"model": model.state_dict()}, optimizer=opt.state_dict(), state={},
                           rng=[capture_rng()], keep=1)
    with safe_open(path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert json.loads((path / "state.json").read_text())["aliases"]["model"] == {"lm_head.weight":
                                                                             "model.embed_tokens.weight"}


def test_keeps_last_k_and_ignores_unfinished_folders(tmp_path):
    sd = {"w": torch.ones(2)}
    opt = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, parts={"model": sd}, optimizer=opt, state={}, rng=[capture_rng()], keep=2)
    (tmp_path / ".step-00000020.tmp").mkdir()  # a save that was killed midway
    (tmp_path / "step-00000025").mkdir()  # no state.json: incomplete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
