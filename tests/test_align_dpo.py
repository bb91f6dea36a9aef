"""The dpo stage: sequence log-probs vs the model alone, the adapter-off reference bit for bit, the reference cache, separable pairs, KTO, exact resume, lineage."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from align_helpers import dpo_config, pair_records, retemplated_copy, reward_config, sft_chain, write_jsonl
from faults import Killed, kill_at
from gristmill.align import AlignError
from gristmill.align.chat import IGNORE, Encoded
from gristmill.align.dpo import run_dpo
from gristmill.align.logprobs import TokenLogps, collate_logps, sequence_logps
from gristmill.align.reference import cached_logps
from gristmill.manifests import format_lineage, lineage, verify
from pretrain_helpers import rows

VOCAB = 300


def causal_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()


def pair_groups(n: int, seed: int = 0) -> list[list[Encoded]]:
    """Pairs sharing a prompt (unlabelled) whose completions are labelled; some completions share their start."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(4, VOCAB) for _ in range(rng.randint(2, 20))]
        common = [rng.randrange(4, VOCAB) for _ in range(rng.choice([0, 2]))]
        pair = []
        for _ in range(2):
            reply = common + [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, 12))]
            pair.append(Encoded(prompt + reply, [IGNORE] * len(prompt) + reply))
        out.append(pair)
    return out


def alone(model, e: Encoded) -> float:
    """log p(labelled tokens) of one sequence by the model's own forward: the reference computation."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([e.input_ids])).logits[0].float().log_softmax(-1)  # (n, V)
    return sum(logp[j - 1, e.labels[j]].item() for j in range(1, len(e.labels)) if e.labels[j] != IGNORE)


@pytest.mark.parametrize("packed", [True, False])
def test_sequence_logps_equal_each_sequence_alone(packed):
    model = causal_lm()
    groups = pair_groups(7)
    batch = collate_logps(groups, pad_id=0, max_length=48, packed=packed)
    with torch.no_grad():
        sums, means = sequence_logps(TokenLogps(model), batch)
    want = [alone(model, e) for g in groups for e in g]
    torch.testing.assert_close(sums, torch.tensor(want), atol=1e-4, rtol=1e-5)
    counts = [sum(t != IGNORE for t in e.labels[1:]) for g in groups for e in g]
    torch.testing.assert_close(means, sums / torch.tensor(counts, dtype=torch.float32))


def test_adapter_disabled_reference_equals_the_sft_model_bit_for_bit():
    from peft import LoraConfig, get_peft_model

    sft = causal_lm(seed=3)
    policy = get_peft_model(copy.deepcopy(sft), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    policy.eval()
    batch = collate_logps(pair_groups(5, seed=1), pad_id=0, max_length=64, packed=True)
    with torch.no_grad():
        want = sequence_logps(TokenLogps(sft), batch)[0]
        with policy.disable_adapter():
            got = sequence_logps(TokenLogps(policy), batch)[0]
        trained = sequence_logps(TokenLogps(policy), batch)[0]
    assert torch.equal(got, want)
    assert not torch.equal(trained, want)  # the adapters do change the policy: the test can fail


def test_reference_cache_reuses_equal_values_and_recomputes_on_a_changed_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"train": torch.tensor([-1.5, -2.25]), "eval": torch.tensor([-3.0])}

    parts = {"reference_model": "a" * 64, "sequences": "b" * 64, "template": "c", "max_length": 64}
    first, path, hit = cached_logps(tmp_path, parts, compute)
    again, path2, hit2 = cached_logps(tmp_path, parts, compute)
    assert (hit, hit2, len(calls), path2) == (False, True, 1, path)
    assert all(torch.equal(first[k], again[k]) for k in first)
    _, path3, hit3 = cached_logps(tmp_path, parts | {"max_length": 128}, compute)
    assert not hit3 and path3 != path and len(calls) == 2
    path3.rename(path)  # a file whose recorded key is not the one its name says is refused
    with pytest.raises(AlignError, match="recorded key parts differ"):
        cached_logps(tmp_path, parts, compute)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """curate (fake) -> tokenize -> pretrain -> sft -> reward -> dpo, all tiny."""
    from gristmill.align.reward import run_reward

    root = tmp_path_factory.mktemp("dpo")
    sft = sft_chain(root)
    pairs = write_jsonl(root / "pairs.jsonl", pair_records(200))
    rm = root / "reward"
    run_reward(reward_config(max_steps=20), {"model": [sft], "data": [pairs]}, rm)
    out = root / "dpo"
    m = run_dpo(dpo_config(max_steps=24), {"model": [sft], "data": [pairs], "reward": [rm]}, out)
    return root, sft, pairs, rm, out, m


def test_dpo_learns_separable_pairs_and_is_judged_against_sft(chain):
    root, _, _, _, out, m = chain
    mt = m.metrics
    assert mt["eval_accuracy"] > 0.9 and mt["eval_margin"] > 0 and mt["pairs_eval"] >= 20
    assert mt["reference"]["mode"] == "cache" and not mt["reference"]["hit"]
    assert mt["judged_prompts"] == 8 and 0 <= mt["win_rate"] <= 1 and mt["kl_to_reference"] is not None
    logged = rows(out)
    assert {"train_accuracy", "train_margin", "train_logp_chosen", "train_logp_rejected"} <= set(logged[1])
    assert verify(out) == [] and {o.path for o in m.outputs} >= {"preferences.png", "report.md", "model/model.safetensors"}
    assert "Win rate over the SFT model" in (out / "report.md").read_text()


def test_killed_and_resumed_dpo_is_bit_identical_and_reuses_the_cache(chain, tmp_path):
    root, sft, pairs, rm, straight_dir, straight = chain
    out = root / "dpo-stopped"  # beside the first run: the same reference cache
    with pytest.raises(Killed):
        run_dpo(dpo_config(max_steps=24), {"model": [sft], "data": [pairs], "reward": [rm]}, out, hooks=kill_at(15))
    resumed = run_dpo(dpo_config(max_steps=24), {"model": [sft], "data": [pairs], "reward": [rm]}, out)
    assert resumed.id == straight.id and resumed.metrics["resumed_from_step"] == 10
    assert resumed.metrics["reference"]["hit"] and resumed.metrics["reference"]["key"] == straight.metrics["reference"]["key"]
    a, b = rows(straight_dir), rows(out)
    for step in range(1, 25):
        for key in ("loss", "grad_norm", "lr", "train_margin", "eval_loss", "pairs"):
            assert a[step].get(key) == b[step].get(key), (step, key)
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        assert resumed.output(name).sha256 == straight.output(name).sha256


def test_losses_without_a_reference_and_the_adapter_reference_train(chain):
    root, sft, pairs, _, _, straight = chain
    ipo = run_dpo(dpo_config(max_steps=12, loss="ipo", eval_every=12), {"model": [sft], "data": [pairs]}, root / "ipo")
    assert ipo.metrics["reference"]["hit"]  # same data, model, template and length as the dpo run: reused
    simpo = run_dpo(dpo_config(max_steps=12, loss="simpo", beta=2.0, judge_prompts=0), {"model": [sft], "data": [pairs]},
                    root / "simpo")
    assert simpo.metrics["reference"] == {"mode": None} and simpo.metrics["eval_accuracy"] > 0.8
    adapter = run_dpo(dpo_config(max_steps=12, reference="adapter", judge_prompts=0), {"model": [sft], "data": [pairs]},
                      root / "adapter")
    assert adapter.metrics["reference"]["mode"] == "adapter" and adapter.metrics["eval_accuracy"] > 0.8
    for m in (ipo, simpo, adapter):
        assert m.metrics["final_train_loss"] < m.metrics["eval_loss"] + 1.0  # finite and logged


def test_kto_trains_from_unpaired_examples(chain, tmp_path):
    root, sft, _, _, _, _ = chain
    r = random.Random(5)
    words = ["river", "stone", "cloud", "apple"]
    recs = [{"prompt": f"Tell me about {w} {v}.", "completion": f"{'good' if d else 'bad'} {w}", "label": d}
            for w, v, d in ((r.choice(words), r.choice(words), r.random() < 0.5) for _ in range(160))]
    data = write_jsonl(tmp_path / "unpaired.jsonl", recs)
    m = run_dpo(dpo_config(max_steps=20, loss="kto", judge_prompts=0), {"model": [sft], "data": [data]}, tmp_path / "kto")
    assert m.metrics["examples_train"] > 100 and m.metrics["eval_accuracy"] > 0.9
    assert rows(tmp_path / "kto")[20]["loss"] < rows(tmp_path / "kto")[1]["loss"]


def test_bad_settings_and_a_changed_template_are_refused(chain, tmp_path):
    root, sft, pairs, _, _, _ = chain
    with pytest.raises(ValueError, match="dpo.reference=adapter needs LoRA"):
        dpo_config(reference="adapter", lora={"enabled": False})
    copy_dir = retemplated_copy(sft, tmp_path / "sft")
    with pytest.raises(AlignError) as err:
        run_dpo(dpo_config(), {"model": [copy_dir], "data": [pairs]}, tmp_path / "out")
    assert str(copy_dir) in str(err.value) and "manifest.json" in str(err.value)


def test_lineage_walks_from_dpo_back_to_curate(chain):
    _, _, _, _, out, m = chain
    stages, node = [], lineage(out)
    while node is not None and node.manifest is not None:
        stages.append(node.manifest.stage)
        node = next((p for p in node.parents if p.manifest is not None and p.manifest.stage != "reward"), None)
    assert stages == ["dpo", "sft", "pretrain", "tokenize", "curate"]
    assert m.id in format_lineage(lineage(out))
