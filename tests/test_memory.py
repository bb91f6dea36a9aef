"""Gradient checkpointing changes nothing but memory: the same loss and gradients with it as without, in train and eval mode, LoRA and full, causal LM and classifier; and it does recompute. Peak memory in MB."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from gristmill.train.memory import checkpointed_layers, enable_gradient_checkpointing, peak_memory_mb, return_freed_memory

VOCAB, PAD, LAYERS = 96, 0, 2
TOL = {"rtol": 1e-5, "atol": 1e-6}  # the recompute runs the same kernels on the same inputs: equal up to fp32 rounding


def config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       attention_dropout=0.1, pad_token_id=PAD, **kw)  # dropout: the recompute must replay its RNG


def causal_lm(seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(config(), attn_implementation="sdpa", dtype=torch.float32)


def classifier(seed: int = 0):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification._from_config(config(num_labels=1), attn_implementation="sdpa",
                                                       dtype=torch.float32)


def lora(model, task_type: str):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    cfg = LoraConfig(task_type=task_type, r=4, lora_alpha=8, lora_dropout=0.1,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    with torch.no_grad():  # peft starts lora_B at zero: make the adapters matter to the loss
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


def batch(seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1, VOCAB, (3, 24), generator=g)}


def lm_loss(model, b):
    ids = b["input_ids"]
    return model(input_ids=ids, labels=ids, use_cache=False).loss


def packed_scores(model, b):
    """The reward stage's forward: groups laid out with a shared prefix under a 4D mask (scoring.SequenceScorer)."""
    from gristmill.align.scoring import SequenceScorer, collate_groups

    ids = b["input_ids"].tolist()
    groups = [[ids[0], ids[0][:10] + ids[1][10:]], [ids[2][:17]]]
    sb = collate_groups(groups, pad_id=PAD, max_length=64, packed=True)
    r = SequenceScorer(model)(**sb)
    return (r * torch.arange(1, len(r) + 1)).sum()


def policy_logps(model, b):
    """PPO / DPO's forward: completion log-probs (logprobs.TokenLogps), with entropies."""
    from gristmill.align.chat import Encoded
    from gristmill.align.logprobs import TokenLogps, collate_logps

    ids = b["input_ids"].tolist()
    enc = [Encoded(input_ids=s, labels=[-100] * 8 + s[8:], truncated=False) for s in ids]
    lb = collate_logps([[enc[0], enc[1]], [enc[2]]], pad_id=PAD, max_length=64, packed=True)
    logp, ent = TokenLogps(model, temperature=0.7)(**{k: lb[k] for k in ("input_ids", "position_ids",
                                                                         "attention_mask", "pos", "target")},
                                                   with_entropy=True)
    return -logp.sum() + 0.1 * ent.sum()


CASES = {
    "causal-full": (causal_lm, None, lm_loss),
    "causal-lora": (causal_lm, "CAUSAL_LM", lm_loss),
    "causal-lora-logps": (causal_lm, "CAUSAL_LM", policy_logps),
    "classifier-full": (classifier, None, packed_scores),
    "classifier-lora": (classifier, "SEQ_CLS", packed_scores),
}


class Recomputes:
    """Counts the calls of every block's MLP; the backward calls it again only under checkpointing.
    (Module hooks do not fire inside the recompute, so the count wraps the instance's forward.)"""

    def __init__(self, model) -> None:
        self.n = 0
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in inner.model.layers:
            mlp = layer.mlp
            mlp.forward = self._counting(mlp.forward)

    def _counting(self, f):
        def g(*a, **k):
            self.n += 1
            return f(*a, **k)
        return g


def saved_bytes(fn) -> tuple[torch.Tensor, int]:
    """(fn's result, bytes of the distinct non-parameter storages autograd saved for the backward)."""
    seen: dict[int, int] = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def run(model, loss_fn, b, mode: str):
    """(loss, {trainable parameter: grad}, MLP calls in the backward, bytes saved for the backward)."""
    getattr(model, mode)()
    model.zero_grad(set_to_none=True)
    counter = Recomputes(model)
    torch.manual_seed(3)  # the same dropout masks for both runs
    loss, saved = saved_bytes(lambda: loss_fn(model, b))
    before = counter.n
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, counter.n - before, saved


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_checkpointing_keeps_loss_and_gradients(case: str, mode: str) -> None:
    build, task, loss_fn = CASES[case]
    plain = build()
    if task:
        plain = lora(plain, task)
    ckpt = copy.deepcopy(plain)
    enable_gradient_checkpointing(ckpt)
    b = batch()

    loss0, grads0, recomputed0, saved0 = run(plain, loss_fn, b, mode)
    loss1, grads1, recomputed1, saved1 = run(ckpt, loss_fn, b, mode)

    assert recomputed0 == 0
    assert recomputed1 == LAYERS, f"{case} {mode}: the backward did not recompute each block ({recomputed1} MLP calls)"
    assert saved1 < 0.6 * saved0, f"{case} {mode}: {saved1} bytes kept for the backward with checkpointing vs {saved0}"
    torch.testing.assert_close(loss1, loss0, **TOL)
    assert grads0.keys() == grads1.keys() and grads0
    if task:
        assert all("lora_" in n or "score" in n for n in grads0), "LoRA: only adapters (and the score head) train"
    for n in grads0:
        assert grads0[n].abs().sum() > 0, f"{n}: no gradient reached it"
        torch.testing.assert_close(grads1[n], grads0[n], **TOL, msg=lambda m, n=n: f"{case} {mode} {n}: {m}")


def test_generation_and_idempotence() -> None:
    """Generation (no_grad, KV cache) is untouched; enabling twice wraps each block once; the config is unchanged."""
    plain = lora(causal_lm(), "CAUSAL_LM").eval()
    ckpt = copy.deepcopy(plain)
    enable_gradient_checkpointing(ckpt)
    enable_gradient_checkpointing(ckpt)
    layers = checkpointed_layers(ckpt)
    assert len(layers) == LAYERS
    assert all(layer.forward.func.__name__ == "_forward_any_mode" and layer.forward.args[0] is layer for layer in layers)
    assert ckpt.config.use_cache == plain.config.use_cache
    ids = batch()["input_ids"][:2, :8]
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": PAD}
    assert torch.equal(plain.generate(input_ids=ids, **kw), ckpt.generate(input_ids=ids, **kw))
    with torch.no_grad():
        counter = Recomputes(ckpt)
        ckpt(input_ids=ids)
        assert counter.n == LAYERS  # one call per block: nothing recorded, nothing checkpointed


def test_refuses_a_model_without_blocks() -> None:
    with pytest.raises((ValueError, AttributeError)):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_peak_memory_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    big = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
    rss = psutil.Process().memory_info().rss / 2**20
    peak = peak_memory_mb("cpu")
    assert rss - 1 <= peak <= psutil.virtual_memory().total / 2**20, (rss, peak)  # MB, not KB or bytes
    assert peak_memory_mb() == pytest.approx(peak, abs=64)
    del big
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    assert peak_memory_mb(torch.device("cuda")) == 3.0
    assert peak_memory_mb("cuda:0") == 3.0


HEAP = """
import os, sys, psutil
from gristmill.train.memory import return_freed_memory
if sys.argv[1] == "1":
    assert return_freed_memory() and os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
import torch  # after the call: torch reads THP_MEM_ALLOC_ENABLE at its first large allocation
rss = lambda: psutil.Process().memory_info().rss / 2**20
x = torch.ones(2 * 2**20); del x          # an 8 MB block freed: glibc's dynamic mmap threshold rises to it
base = rss()
blocks = [torch.ones(2 * 2**20) for _ in range(40)]  # 320 MB in 8 MB blocks
last = blocks[-1]; del blocks                          # all freed but the last
print(rss() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_return_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freed 8 MB activations stay resident under glibc's default; with the threshold fixed they go back.
    A threshold the user set in the environment stands."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")}
    kept = {on: float(subprocess.run([sys.executable, "-c", HEAP, on], capture_output=True, text=True, env=env,
                                     check=True).stdout) for on in ("0", "1")}
    if kept["0"] < 200:
        pytest.skip(f"this libc returns freed blocks by itself ({kept['0']:.0f} MB kept)")
    assert kept["1"] < 50, kept
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_freed_memory() is False
