"""Rollouts: k samples per prompt, reproducible from a seed without touching the caller's RNG, and log-probs the training forward recomputes."""
from __future__ import annotations

import pytest
import torch

from align_helpers import tiny_base
from gristmill.align import AlignError
from gristmill.align.chat import pad_id, stop_ids
from gristmill.align.logprobs import TokenLogps, collate_logps
from gristmill.align.models import load_causal_lm, load_tokenizer
from gristmill.align.generate import check_recomputed, sample

PROMPTS = [[{"role": "user", "content": "Tell me about river."}], [{"role": "user", "content": "Reverse stone."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about cloud."}]]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    folder = tiny_base(tmp_path_factory.mktemp("rollout") / "base")
    tok = load_tokenizer(folder)
    return load_causal_lm(folder, pad=pad_id(tok)), tok


def draw(policy, seed: int = 0):
    model, tok = policy
    return sample(model, tok, PROMPTS, k=2, max_new_tokens=6, max_length=64, temperature=0.7, top_p=0.9,
                  seed=seed, device="cpu", batch_size=4)


def test_k_samples_per_prompt_end_at_a_stop_token_or_the_limit(policy):
    _, tok = policy
    r = draw(policy)
    assert len(r.response_ids) == len(r.prompt_ids) == len(r.logps) == 6
    assert r.prompt_ids[0] == r.prompt_ids[1] and r.prompt_ids[0] != r.prompt_ids[2]  # contiguous groups
    for resp, lp, done in zip(r.response_ids, r.logps, r.finished):
        assert 1 <= len(resp) <= 6 and len(lp) == len(resp) and all(x <= 0 for x in lp)
        assert done == (resp[-1] in stop_ids(tok)) and (done or len(resp) == 6)
        assert not any(t in stop_ids(tok) for t in resp[:-1])  # nothing kept after the end token


def test_sampling_is_a_function_of_the_seed_and_leaves_the_callers_rng_alone(policy):
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = draw(policy, seed=7)
    assert torch.equal(torch.rand(3), want)
    b, c = draw(policy, seed=7), draw(policy, seed=8)
    assert a.response_ids == b.response_ids and a.logps == b.logps
    assert a.response_ids != c.response_ids


def test_the_training_forward_recomputes_the_sampling_log_probs(policy):
    model, tok = policy
    r = draw(policy)
    batch = collate_logps(r.groups(2), pad_id=pad_id(tok), max_length=128, packed=True)
    with torch.no_grad():
        token = TokenLogps(model, temperature=0.7)(**{k: batch[k] for k in ("input_ids", "position_ids",
                                                                            "attention_mask", "pos", "target")})
    assert check_recomputed(r.logps, token, tol=1e-4) < 1e-4
    with torch.no_grad():  # at another temperature the log-probs differ, and the check says so
        wrong = TokenLogps(model)(**{k: batch[k] for k in ("input_ids", "position_ids", "attention_mask", "pos",
                                                           "target")})
    with pytest.raises(AlignError, match="recomputes the sampled tokens' log-probs"):
        check_recomputed(r.logps, wrong, tol=1e-4)


@pytest.mark.parametrize("perturb", ["weights", "temperature", "bf16"])
def test_the_check_refuses_a_forward_that_computes_another_model(policy, perturb):
    model, tok = policy
    r = draw(policy)
    batch = collate_logps(r.groups(2), pad_id=pad_id(tok), max_length=128, packed=True)
    args = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask", "pos", "target")}
    import copy

    other = model
    if perturb == "weights":  # e.g. a stale copy of the policy, or dropout left on
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.model.layers[0].mlp.down_proj.weight.mul_(1.05)
    elif perturb == "bf16":  # training in another dtype than sampling
        other = copy.deepcopy(model).to(torch.bfloat16)
    temperature = 1.0 if perturb == "temperature" else 0.7
    with torch.no_grad():
        token = TokenLogps(other, temperature=temperature)(**args)
    with pytest.raises(AlignError, match="generation and training do not compute the same model"):
        check_recomputed(r.logps, token, tol=1e-4)
