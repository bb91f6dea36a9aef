"""The alignment losses, each against its formula written out by hand on fixed tensors (plain Python floats, not the code under test)."""
from __future__ import annotations

import math

import pytest
import torch

from gristmill.align import losses as L

PC = torch.tensor([-10.0, -4.0, -7.5, -20.0])  # policy log-probs of chosen (sums)
PR = torch.tensor([-12.0, -3.0, -7.5, -2.0])   # ... of rejected
RC = torch.tensor([-11.0, -4.5, -7.0, -19.0])  # reference
RR = torch.tensor([-11.5, -3.5, -8.0, -2.5])


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def rows(*ts):
    return zip(*(t.tolist() for t in ts))


def close(got: torch.Tensor, want: list[float]) -> None:
    torch.testing.assert_close(got, torch.tensor(want, dtype=got.dtype), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_dpo_loss_is_the_sigmoid_of_the_log_ratio_difference(eps):
    beta = 0.3
    want = []
    for pc, pr, rc, rr in rows(PC, PR, RC, RR):
        h = (pc - rc) - (pr - rr)
        want.append(-(1 - eps) * logsig(beta * h) - eps * logsig(-beta * h))
    close(L.dpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps), want)
    # at h = 0 plain DPO is log 2 whatever beta; it falls as the chosen side's log-ratio grows
    assert L.dpo_loss(PC[:1], PC[:1], RC[:1], RC[:1], beta=5.0).item() == pytest.approx(math.log(2))
    assert L.dpo_loss(PC[:1] + 1, PR[:1], RC[:1], RR[:1], beta=0.3) < L.dpo_loss(PC[:1], PR[:1], RC[:1], RR[:1], beta=0.3)


def test_dpo_loss_equals_trl_sigmoid_form():
    # TRL: logits = (pc - pr) - (rc - rr); loss = -logsigmoid(beta * logits)  (the same h, rearranged)
    beta = 0.1
    want = [-logsig(beta * ((pc - pr) - (rc - rr))) for pc, pr, rc, rr in rows(PC, PR, RC, RR)]
    close(L.dpo_loss(PC, PR, RC, RR, beta=beta), want)


def test_ipo_loss_is_the_squared_distance_to_half_over_beta():
    beta = 0.5
    want = [((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2 for pc, pr, rc, rr in rows(PC, PR, RC, RR)]
    close(L.ipo_loss(PC, PR, RC, RR, beta=beta), want)


def test_simpo_loss_uses_no_reference_and_a_margin():
    mc, mr = PC / 5, PR / 4  # per-token means
    want = [-logsig(2.0 * (c - r) - 0.5) for c, r in rows(mc, mr)]
    close(L.simpo_loss(mc, mr, beta=2.0, gamma=0.5), want)


def test_orpo_loss_is_nll_plus_the_log_odds_ratio_term():
    mc, mr = torch.tensor([-0.5, -2.0, -0.01]), torch.tensor([-1.5, -0.3, -0.02])
    lam = 0.1
    want = []
    for c, r in rows(mc, mr):
        odds = lambda m: math.log(math.exp(m) / (1 - math.exp(m)))  # noqa: E731
        want.append(-c - lam * logsig(odds(c) - odds(r)))
    close(L.orpo_loss(mc, mr, lam=lam), want)


def test_rpo_loss_is_dpo_plus_alpha_times_the_chosen_nll():
    mc = PC / 5
    want = [-logsig(0.1 * ((pc - rc) - (pr - rr))) + 0.7 * -m for pc, pr, rc, rr, m in rows(PC, PR, RC, RR, mc)]
    close(L.rpo_loss(PC, PR, RC, RR, mc, beta=0.1, alpha=0.7), want)


def test_kto_loss_and_its_reference_point():
    pol, ref = torch.tensor([-5.0, -6.0, -4.0, -9.0]), torch.tensor([-5.5, -5.0, -4.5, -8.0])
    desirable = torch.tensor([True, False, True, False])
    mism_p, mism_r = torch.tensor([-30.0, -28.0]), torch.tensor([-31.0, -28.4])
    z0 = L.kto_reference_point(mism_p, mism_r)
    assert z0.item() == pytest.approx(max(0.0, ((-30 + 31) + (-28 + 28.4)) / 2))
    assert L.kto_reference_point(mism_r, mism_p).item() == 0.0  # a negative KL estimate is clamped to 0
    beta, wd, wu = 0.2, 1.0, 1.5
    want = [wd * (1 - sig(beta * ((p - r) - z0.item()))) if d else wu * (1 - sig(beta * (z0.item() - (p - r))))
            for p, r, d in zip(pol.tolist(), ref.tolist(), desirable.tolist())]
    close(L.kto_loss(pol, ref, desirable, z0, beta=beta, desirable_weight=wd, undesirable_weight=wu), want)


def test_each_loss_pulls_the_chosen_side_up():
    """One gradient step's sign: every loss lowers when the chosen log-prob rises (the rejected one fixed)."""
    mc, mr = PC / 5, PR / 4
    for fn in (lambda c: L.dpo_loss(c, PR, RC, RR, beta=0.1), lambda c: L.ipo_loss(c / 5, mr, RC / 5, RR / 4, beta=0.1),
               lambda c: L.simpo_loss(c / 5, mr, beta=2.0, gamma=0.5), lambda c: L.orpo_loss((c / 40).clamp(max=-0.01), mr / 10, lam=0.1),
               lambda c: L.rpo_loss(c, PR, RC, RR, c / 5, beta=0.1, alpha=1.0)):
        c = PC.clone().requires_grad_(True)
        fn(c).sum().backward()
        assert (c.grad < 0).all()


# ---- reinforcement learning pieces, against plain-Python references

def test_kl_penalties_k1_and_k3():
    logp, ref = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    close(L.kl_penalty(logp, ref, "k1")[0], [a - b for a, b in zip(logp[0].tolist(), ref[0].tolist())])
    k3 = [math.exp(b - a) - 1 - (b - a) for a, b in zip(logp[0].tolist(), ref[0].tolist())]
    close(L.kl_penalty(logp, ref, "k3")[0], k3)
    assert (L.kl_penalty(logp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k1"):
        L.kl_penalty(logp, ref, "k2")


def test_gae_matches_the_backward_recursion_and_monte_carlo_at_lambda_1():
    r = torch.tensor([[0.1, -0.2, 0.3, 1.0], [0.0, 0.5, 0.0, 0.0]])
    v = torch.tensor([[0.5, 0.4, 0.2, 0.9], [0.1, 0.3, 0.7, 0.7]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    gamma, lam = 0.9, 0.8
    adv, ret = L.gae(r, v, mask, gamma=gamma, lam=lam)
    for b in range(2):
        n = int(mask[b].sum())
        want, running = [0.0] * 4, 0.0
        for t in reversed(range(n)):
            nv = v[b, t + 1].item() if t + 1 < n else 0.0
            running = r[b, t].item() + gamma * nv - v[b, t].item() + gamma * lam * running
            want[t] = running
        close(adv[b], want)
        close(ret[b], [want[t] + v[b, t].item() if t < n else 0.0 for t in range(4)])
    adv1, _ = L.gae(r, v, mask, gamma=1.0, lam=1.0)  # λ = γ = 1: the return-to-go minus the value
    for b in range(2):
        n = int(mask[b].sum())
        close(adv1[b][:n], [sum(r[b, t:n].tolist()) - v[b, t].item() for t in range(n)])


def test_whiten_uses_only_masked_entries():
    x, mask = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]]), torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = L.whiten(x, mask)
    vals = [1.0, 2.0, 3.0, 4.0]
    mean, std = sum(vals) / 4, math.sqrt(sum((a - 2.5) ** 2 for a in vals) / 4)
    close(w.flatten(), [(1 - mean) / std, (2 - mean) / std, 0.0, (3 - mean) / std, (4 - mean) / std, 0.0])
    close(L.whiten(x, mask, shift_mean=False).flatten()[:2], [(1 - mean) / std + mean, (2 - mean) / std + mean])


def test_group_advantages_grpo_and_rloo():
    s = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])  # 2 prompts x k = 4
    want = []
    for g in (s[:4].tolist(), s[4:].tolist()):
        mean = sum(g) / 4
        std = math.sqrt(sum((a - mean) ** 2 for a in g) / 3)
        want += [(a - mean) / (std + 1e-6) for a in g]
    close(L.grpo_advantages(s, 4), want)
    assert L.grpo_advantages(s, 4)[4:].abs().max() == 0  # equal scores teach nothing
    loo = [a - (sum(g) - a) / 3 for g in (s[:4].tolist(), s[4:].tolist()) for a in g]
    close(L.rloo_advantages(s, 4), loo)
    with pytest.raises(ValueError, match="k >= 2"):
        L.rloo_advantages(s, 1)


def test_ppo_clipped_policy_and_value_losses():
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    logp = old + torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), math.log(1.5)]])
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    loss, clipped = L.ppo_policy_loss(logp, old, adv, clip=0.2)
    want = []
    for ratio, a in zip((1.5, 0.5, 1.1, 1.5), adv[0].tolist()):
        want.append(-min(ratio * a, min(max(ratio, 0.8), 1.2) * a))
    close(loss[0], want)
    assert clipped[0].tolist() == [1.0, 0.0, 0.0, 0.0]  # only the first is held back by the clip
    v, v_old, ret = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.5, 2.0]]), torch.tensor([[2.0, -1.0, 1.0]])
    want_v = []
    for a, o, R in zip(v[0].tolist(), v_old[0].tolist(), ret[0].tolist()):
        c = o + min(max(a - o, -0.2), 0.2)
        want_v.append(0.5 * max((a - R) ** 2, (c - R) ** 2))
    close(L.ppo_value_loss(v, v_old, ret, clip=0.2)[0], want_v)


# ---- the table of preference losses, each entry through the dpo stage's loss path

def test_the_table_is_what_the_config_accepts_and_its_reference_decision(monkeypatch):
    from gristmill.align.config import DPOConfig
    from gristmill.config import ConfigError, build

    assert set(L.PREFERENCE_LOSSES) == {"dpo", "ipo", "rpo", "simpo", "orpo", "kto"}
    for name, entry in L.PREFERENCE_LOSSES.items():
        assert entry.uses in ("sums", "means") and entry.description
        assert DPOConfig(loss=name).uses_reference is entry.needs_reference
    assert [n for n, e in L.PREFERENCE_LOSSES.items() if not e.needs_reference] == ["simpo", "orpo"]
    assert [n for n, e in L.PREFERENCE_LOSSES.items() if e.unpaired] == ["kto"]
    with pytest.raises(ConfigError, match="dpo.loss='hinge' is not one of dpo, ipo, rpo, simpo, orpo, kto"):
        build(DPOConfig, {"loss": "hinge"}, section="dpo")
    # a new entry is a new choice, with its reference decision: nothing else lists the names
    hinge = L.PreferenceLoss(lambda x, c: torch.relu(1 - c.beta * (x.chosen - x.rejected)), needs_reference=False,
                             uses="means", unpaired=False, description="hinge on the mean log-prob margin")
    monkeypatch.setitem(L.PREFERENCE_LOSSES, "hinge", hinge)
    assert build(DPOConfig, {"loss": "hinge"}, section="dpo").uses_reference is False


VOCAB = 300


def tiny_lm(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)


def tiny_batch(n: int = 4):
    """n items of two sequences sharing a prompt, only the completions labelled, collated as the stage does."""
    import random

    from gristmill.align.chat import IGNORE, Encoded
    from gristmill.align.logprobs import collate_logps

    rng = random.Random(0)
    groups = []
    for _ in range(n):
        prompt = [rng.randrange(4, VOCAB) for _ in range(rng.randint(3, 8))]
        groups.append([Encoded(prompt + reply, [IGNORE] * len(prompt) + reply)
                       for reply in ([rng.randrange(4, VOCAB) for _ in range(rng.randint(2, 6))] for _ in range(2))])
    return collate_logps(groups, pad_id=0, max_length=64, packed=True)


SETTINGS = {"dpo": {"label_smoothing": 0.1}, "simpo": {"beta": 2.0}}


@pytest.mark.parametrize("name", list(L.PREFERENCE_LOSSES))
def test_every_table_entry_trains_one_step_through_the_stage_loss_path(name):
    from gristmill.align import AlignError
    from gristmill.align.config import DPOConfig
    from gristmill.align.dpo import preference_loss
    from gristmill.align.logprobs import TokenLogps, sequence_logps

    entry = L.PREFERENCE_LOSSES[name]
    config = DPOConfig(loss=name, device="cpu", **SETTINGS.get(name, {}))
    batch = tiny_batch()
    desirable = torch.tensor([True, False, True, False]) if entry.unpaired else None
    with torch.no_grad():
        ref = sequence_logps(TokenLogps(tiny_lm(seed=1).eval()), batch)[0]  # (2B,) sums of another model
    model = tiny_lm(seed=0).train()
    policy = TokenLogps(model)

    def loss_of(reference):
        sums, means = sequence_logps(policy, batch)
        return preference_loss(config, sums, means, reference, batch["tokens"], desirable)

    loss, stats = loss_of(ref)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in stats.values())
    # the reference decision is honoured: read when needed (None refused, NaN shows), never read otherwise
    nan = torch.full_like(ref, float("nan"))
    if entry.needs_reference:
        with pytest.raises(AlignError, match=f"dpo.loss={name} compares against the reference"):
            loss_of(None)
        assert torch.isnan(loss_of(nan)[0]).all()
    else:
        for other in (nan, None):
            again, again_stats = loss_of(other)
            assert torch.equal(again, loss) and all(torch.equal(again_stats[k], v) for k, v in stats.items())
    # one optimizer step: finite gradients reach the weights, and the loss on this batch falls
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    opt.step()
    with torch.no_grad():
        after = loss_of(ref)[0]
    assert torch.isfinite(after).all() and after.mean() < loss.mean().detach()
