"""Same config, same inputs -> same bytes: two uninterrupted runs of pretrain and of every align stage agree on
every output their manifests mark deterministic (wall-clock figures live in timings.jsonl and report.md)."""
from __future__ import annotations

import random

import pytest

from align_helpers import WORDS, dpo_config, reward_config, sft_config, sft_records, tiny_base, write_jsonl
from gristmill.manifests import read_manifest
from pretrain_helpers import make_tokens, tiny


def _deterministic(folder):
    m = read_manifest(folder)
    outs = {o.path: o for o in m.outputs}
    assert outs["timings.jsonl"].deterministic is False and outs["report.md"].deterministic is False
    assert outs["metrics.jsonl"].deterministic is True
    assert outs["model/README.md"].deterministic is True  # the model card: compared below like the weights
    return {o.path: o.sha256 for o in m.outputs if o.deterministic}


def _twice(run, tmp_path, name):
    a, b = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
    run(a)
    run(b)
    da, db = _deterministic(a), _deterministic(b)
    assert da == db and len(da) >= 3, name
    return a


def test_two_pretrain_runs_give_the_same_deterministic_outputs(tmp_path):
    from gristmill.pretrain.run import run_pretrain

    tok = make_tokens(tmp_path / "tok")
    _twice(lambda out: run_pretrain(tiny(max_steps=8, checkpoint={"every": 4}), {"data": [tok]}, out), tmp_path, "pre")


def test_two_runs_of_each_align_stage_give_the_same_deterministic_outputs(tmp_path):
    from gristmill.align.config import PPOConfig
    from gristmill.align.dpo import run_dpo
    from gristmill.align.ppo import run_ppo
    from gristmill.align.reward import run_reward
    from gristmill.align.sft import run_sft
    from gristmill.config import build

    base = tiny_base(tmp_path / "base")
    sft_data = write_jsonl(tmp_path / "sft.jsonl", sft_records(40))
    sft = _twice(lambda out: run_sft(sft_config(max_steps=6, eval_generate=4, samples=2),
                                     {"model": [base], "data": [sft_data]}, out), tmp_path, "sft")
    r = random.Random(0)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Say a word about {w}.", "chosen": "good",
                                                    "rejected": r.choice(["bad", "no"])} for w in WORDS for _ in range(2)])
    rm = _twice(lambda out: run_reward(reward_config(max_steps=6), {"model": [sft], "data": [pairs]}, out),
                tmp_path, "reward")
    _twice(lambda out: run_dpo(dpo_config(max_steps=6), {"model": [sft], "data": [pairs], "reward": [rm]}, out),
           tmp_path, "dpo")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say a word about {w}.", "answer": "good"}
                                                       for w in WORDS])
    ppo = build(PPOConfig, dict(max_steps=3, prompts_per_iteration=4, samples=1, minibatch_size=4, max_new_tokens=4,
                                max_length=64, device="cpu", judge_prompts=4, samples_shown=1, advantage="gae",
                                reward="model+check", data={"eval_fraction": 0.2}, checkpoint={"every": 2}),
                section="ppo")
    _twice(lambda out: run_ppo(ppo, {"model": [sft], "data": [prompts], "reward": [rm]}, out), tmp_path, "ppo")
    grpo = build(PPOConfig, dict(max_steps=3, prompts_per_iteration=2, samples=2, minibatch_size=4, max_new_tokens=4,
                                 max_length=64, device="cpu", judge_prompts=4, samples_shown=1, advantage="grpo",
                                 reward="check", data={"eval_fraction": 0.2}, checkpoint={"every": 2}), section="ppo")
    _twice(lambda out: run_ppo(grpo, {"model": [sft], "data": [prompts], "reward": [rm]}, out), tmp_path, "grpo")
