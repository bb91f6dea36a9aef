"""The ppo stage: GRPO / RLOO with the checker and PPO with a reward model raise the reward with KL bounded, exact resume, the reward model shared with the value model, refusals, lineage."""
from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from align_helpers import WORDS, pair_records, reward_config, sft_chain, sft_config, tiny_base, write_jsonl
from faults import Killed, kill_at
from safetensors.torch import load_file
from gristmill.align import AlignError
from gristmill.align.ppo import TIME_KEYS, run_ppo
from gristmill.manifests import format_lineage, lineage, verify
from pretrain_helpers import rows


def ppo_config(**overrides):
    from gristmill.align.config import PPOConfig
    from gristmill.config import build
    from pretrain_helpers import merged

    base = dict(max_steps=12, prompts_per_iteration=8, samples=4, minibatch_size=16, max_new_tokens=6,
                max_length=64, device="cpu", judge_prompts=8, samples_shown=2, advantage="grpo", reward="check", temperature=0.7,
                data={"eval_fraction": 0.2}, optim={"lr": 3e-3}, checkpoint={"every": 4})
    return build(PPOConfig, merged(base, overrides), section="ppo")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny SFT model that answers "Say a word about X." with "good" or "bad" about equally often (full
    fine-tuning: the tiny base learns little through adapters), a reward model that prefers "good", and
    prompts whose checkable answer is "good"."""
    from gristmill.align.reward import run_reward
    from gristmill.align.sft import run_sft

    root = tmp_path_factory.mktemp("ppo")
    r = random.Random(0)
    recs = [{"instruction": f"Say a word about {w}.", "response": r.choice(["good", "bad"])} for w in WORDS for _ in range(8)]
    sft = root / "sft"
    run_sft(sft_config(max_steps=60, lora={"enabled": False}, eval_generate=0, samples=0,
                       optim={"lr": 3e-3, "warmup_steps": 3}),
            {"model": [tiny_base(root / "base")], "data": [write_jsonl(root / "sft.jsonl", recs)]}, sft)
    rm = root / "rm"
    pairs = [{"prompt": f"Say a word about {w}.", "chosen": "good", "rejected": "bad"} for w in WORDS for _ in range(4)]
    run_reward(reward_config(max_steps=20), {"model": [sft], "data": [write_jsonl(root / "pairs.jsonl", pairs)]}, rm)
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": f"Say a word about {w}.", "answer": "good"}
                                                   for w in WORDS * 3])
    return root, sft, rm, prompts


def mean(rs, key, lo, hi):
    xs = [rs[i][key] for i in range(lo, hi + 1)]
    return sum(xs) / len(xs)


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_group_estimators_with_the_checker_raise_accuracy_with_kl_bounded(chain, advantage):
    root, sft, _, prompts = chain
    m = run_ppo(ppo_config(advantage=advantage), {"model": [sft], "data": [prompts]}, root / advantage)
    rs = rows(root / advantage)
    assert len(rs) == 12 and m.metrics["value_model"] is None
    assert mean(rs, "accuracy", 10, 12) > mean(rs, "accuracy", 1, 3) + 0.2, [rs[i]["accuracy"] for i in rs]
    assert all(rs[i]["kl"] < 3.0 for i in rs) and rs[1]["kl"] == pytest.approx(0.0, abs=1e-5)  # π = π_ref at first
    assert rs[1]["logp_max_diff"] < 1e-4  # sampling and training forward agree
    assert m.metrics["answer_accuracy"] is not None and verify(root / advantage) == []


def test_ppo_with_the_reward_model_raises_its_score_and_shares_it_with_the_value_model(chain):
    from gristmill.align.chat import pad_id
    from gristmill.align.models import load_reward_model, load_tokenizer
    from gristmill.align.rewards import model_rewards
    from gristmill.align.scoring import SequenceScorer

    root, sft, rm, prompts = chain
    out = root / "ppo-gae"
    m = run_ppo(ppo_config(advantage="gae", reward="model", samples=1, minibatch_size=8, max_steps=12,
                           prompts_per_iteration=16, kl_coef=0.05, optim={"lr": 1e-3}, judge_prompts=8, samples_shown=8),
                {"model": [sft], "data": [prompts], "reward": [rm]}, out)
    rs = rows(out)
    assert m.metrics["value_model"] == "reward" and m.metrics["roles_memory_mb"]["value_base"] == 0.0
    assert mean(rs, "score", 10, 12) > mean(rs, "score", 1, 3) + 0.2, [rs[i]["score"] for i in rs]
    assert all(rs[i]["kl"] < 3.0 for i in rs) and all("value_loss" in rs[i] and "explained_variance" in rs[i] for i in rs)
    assert m.metrics["win_rate"] is not None and m.metrics["reward_after"] >= m.metrics["reward_before"]
    # the value adapters and head trained on the reward model's weights left the reward itself untouched:
    # the judged mean reward of the final answers equals a fresh copy of the reward model's
    tok = load_tokenizer(rm / "model")
    fresh = SequenceScorer(load_reward_model(rm / "model", pad=pad_id(tok), seed=5).eval())
    shown = m.metrics["samples"]
    assert len(shown) == m.metrics["judged_prompts"] > 0
    got = model_rewards(fresh, tok, [[{"role": "user", "content": s["prompt"]}] for s in shown],
                        [[s["after"]] for s in shown], max_length=64, device="cpu")
    assert sum(g[0] for g in got) / len(got) == pytest.approx(m.metrics["reward_after"], abs=1e-5)
    report = (out / "report.md").read_text()
    assert "Win rate over the SFT model" in report and "value model" in report.lower() and (out / "rl.png").is_file()


@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_killed_and_resumed_rl_is_bit_identical(chain, tmp_path, advantage):
    root, sft, rm, prompts = chain
    extra = {"reward": "model+check", "samples": 1, "minibatch_size": 8} if advantage == "gae" else {}
    cfg = ppo_config(advantage=advantage, max_steps=6, judge_prompts=0, target_kl=0.5, kl_horizon=50, **extra)
    inputs = {"model": [sft], "data": [prompts]} | ({"reward": [rm]} if advantage == "gae" else {})
    straight = run_ppo(cfg, inputs, tmp_path / "straight")
    with pytest.raises(Killed):
        run_ppo(cfg, inputs, tmp_path / "stopped", hooks=kill_at(5))
    resumed = run_ppo(cfg, inputs, tmp_path / "stopped")
    assert resumed.id == straight.id and resumed.metrics["resumed_from_iteration"] == 4
    assert resumed.metrics["iterations_run"] == 2
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "stopped")
    assert a.keys() == b.keys() == set(range(1, 7))
    for i in a:
        strip = set(TIME_KEYS)
        assert {k: v for k, v in a[i].items() if k not in strip} == {k: v for k, v in b[i].items() if k not in strip}
    assert a[6]["kl_coef"] != cfg.kl_coef  # the adaptive controller moved, and was restored exactly
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        assert resumed.output(name).sha256 == straight.output(name).sha256


def test_a_non_finite_update_rolls_back_through_the_core_and_skips_that_iterations_prompts(chain, tmp_path):
    """The core's spike ladder judges every PPO update: a NaN loss at iteration 3 rolls back to the newest
    verified checkpoint (iteration 2), lowers the LR, skips iteration 3's prompts and trains on."""
    from faults import Faults

    _, sft, _, prompts = chain
    cfg = ppo_config(max_steps=5, judge_prompts=0, checkpoint={"every": 2})
    m = run_ppo(cfg, {"model": [sft], "data": [prompts]}, tmp_path / "out", hooks=Faults(nan_at=3))
    (event,) = m.events
    assert event["action"] == "rollback" and event["step"] == 3 and "non-finite" in event["reason"]
    P = cfg.prompts_per_iteration
    assert event["to_step"] == 2 and event["skipped"] == [2 * P, 2 * P + P * (1 + cfg.spike.margin_steps)]
    assert m.metrics["iterations"] == 5 and m.metrics["rollbacks"] == 1
    logged = rows(tmp_path / "out")
    assert sorted(logged) == [1, 2, 3, 4, 5] and all(logged[i].get("action") is None for i in (3, 4, 5))
    assert logged[3]["lr"] == pytest.approx(cfg.optim.lr * cfg.spike.lr_factor)  # lowered after the rollback
    assert all(torch.isfinite(p).all() for p in load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors").values())


def test_a_reward_model_with_another_template_is_refused(chain, tmp_path):
    from gristmill.align.reward import run_reward

    root, sft, _, prompts = chain
    raw = tmp_path / "sft-raw"  # the SFT weights as a plain HF folder, its template changed by one space
    shutil.copytree(sft / "model", raw)
    cfg_path = raw / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc["chat_template"] = tc["chat_template"].replace("<|im_start|>", "<|im_start|> ")
    cfg_path.write_text(json.dumps(tc))
    rm = tmp_path / "rm-other"
    run_reward(reward_config(max_steps=3), {"model": [raw], "data": [write_jsonl(tmp_path / "p.jsonl", pair_records(20))]},
               rm)
    with pytest.raises(AlignError, match="chat template differs from the policy's"):
        run_ppo(ppo_config(advantage="gae", reward="model", samples=1, minibatch_size=8, max_steps=1),
                {"model": [sft], "data": [prompts], "reward": [rm]}, tmp_path / "ppo")


def test_refusals_name_what_to_change(chain, tmp_path):
    root, sft, _, prompts = chain
    with pytest.raises(AlignError, match="needs --reward"):
        run_ppo(ppo_config(reward="model"), {"model": [sft], "data": [prompts]}, tmp_path / "a")
    no_answer = write_jsonl(tmp_path / "q.jsonl", [{"prompt": f"Say a word about {w}."} for w in WORDS * 2])
    with pytest.raises(AlignError, match="have no 'answer'"):
        run_ppo(ppo_config(), {"model": [sft], "data": [no_answer]}, tmp_path / "b")
    with pytest.raises(ValueError, match="ppo.samples"):
        ppo_config(advantage="rloo", samples=1, minibatch_size=8)


def test_lineage_walks_from_ppo_back_to_the_raw_dump(tmp_path):
    from gristmill.align.reward import run_reward

    sft = sft_chain(tmp_path)
    rm = tmp_path / "rm"
    run_reward(reward_config(max_steps=3), {"model": [sft], "data": [write_jsonl(tmp_path / "p.jsonl", pair_records(20))]},
               rm)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Reverse {w}.", "answer": w[::-1]} for w in WORDS * 2])
    out = tmp_path / "ppo"
    run_ppo(ppo_config(advantage="gae", reward="model+check", samples=1, minibatch_size=8, max_steps=2, judge_prompts=4),
            {"model": [sft], "data": [prompts], "reward": [rm]}, out)
    assert verify(out) == []
    stages, node = [], lineage(out)
    while node is not None and node.manifest is not None:
        stages.append(node.manifest.stage)
        node = next((p for p in node.parents if p.manifest is not None and p.manifest.stage != "sft"), None) or \
            next((p for p in node.parents if p.manifest is not None), None)
    assert stages == ["ppo", "reward", "sft", "pretrain", "tokenize", "curate"], stages
    assert "reward" in format_lineage(lineage(out))
