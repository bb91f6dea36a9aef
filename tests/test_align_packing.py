"""Packing and padding: an example's logits and loss in a packed or padded batch equal its own; pack() covers every example once."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from gristmill.align import AlignError
from gristmill.align.chat import IGNORE, Encoded
from gristmill.align.packing import collate, pack

PAD = 1
VOCAB = 300


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()


def examples(n: int, lo: int, hi: int, seed: int = 0) -> list[Encoded]:
    """Random ids; the second half of each example is "assistant" (labelled), the first half not."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(4, VOCAB) for _ in range(rng.randint(lo, hi))]
        cut = len(ids) // 2
        out.append(Encoded(input_ids=ids, labels=[IGNORE] * cut + ids[cut:]))
    return out


def forward(model, batch: dict) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits  # (R, T, V)


def alone(model, e: Encoded) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([e.input_ids])).logits[0]  # (n, V)


def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(summed next-token cross-entropy, supervised tokens): logits[:, :-1] against labels[:, 1:]."""
    flat = labels[..., 1:].reshape(-1)
    loss = F.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE,
                           reduction="sum")
    return loss.item(), int((flat != IGNORE).sum())


def test_packed_logits_equal_each_example_alone(model):
    exs = examples(9, 3, 40)
    rows = pack([len(e.input_ids) for e in exs], 64)
    assert any(len(r) > 1 for r in rows)
    batch = collate(exs, pad_id=PAD, packed=True, rows=rows)
    assert "attention_mask" not in batch and batch["use_cache"] is False
    logits = forward(model, batch)
    total, count = 0.0, 0
    for r, row in enumerate(rows):
        t = 0
        for i in row:
            n = len(exs[i].input_ids)
            torch.testing.assert_close(logits[r, t:t + n], alone(model, exs[i]), atol=1e-5, rtol=0)
            assert batch["position_ids"][r, t:t + n].tolist() == list(range(n))
            assert batch["labels"][r, t] == IGNORE  # the previous example's last token predicts nothing here
            s, c = loss_sum(alone(model, exs[i])[None], torch.tensor([exs[i].labels]))
            total, count = total + s, count + c
            t += n
        assert batch["input_ids"][r, t:].eq(PAD).all() and batch["labels"][r, t:].eq(IGNORE).all()
    # The loss over the packed batch is the sum of the examples' own losses: nothing leaks across boundaries.
    s, c = loss_sum(logits, batch["labels"])
    assert c == count and s == pytest.approx(total, rel=1e-5)


def test_padded_logits_equal_each_example_alone(model):
    exs = examples(6, 2, 30, seed=1)
    batch = collate(exs, pad_id=PAD, packed=False)
    logits = forward(model, batch)
    assert logits.shape[:2] == (6, max(len(e.input_ids) for e in exs))
    total, count = 0.0, 0
    for b, e in enumerate(exs):
        n = len(e.input_ids)
        torch.testing.assert_close(logits[b, :n], alone(model, e), atol=1e-5, rtol=0)
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (logits.shape[1] - n)
        assert batch["labels"][b, n:].eq(IGNORE).all()
        s, c = loss_sum(alone(model, e)[None], torch.tensor([e.labels]))
        total, count = total + s, count + c
    s, c = loss_sum(logits, batch["labels"])
    assert c == count and s == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("spoil", ["2d attention_mask", "kv cache", "positions not reset"])
def test_without_the_block_mask_the_second_example_differs(model, spoil):
    a, b = examples(2, 12, 20, seed=2)
    batch = collate([a, b], pad_id=PAD, packed=True)
    n = len(a.input_ids)
    torch.testing.assert_close(forward(model, batch)[0, n:], alone(model, b), atol=1e-5, rtol=0)
    if spoil == "2d attention_mask":  # a padding mask switches transformers' packed-sequence detection off
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    elif spoil == "kv cache":  # so does a cache, which the config's use_cache=True would create
        del batch["use_cache"]
    else:
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
    assert (forward(model, batch)[0, n:] - alone(model, b)).abs().max() > 1e-3
    torch.testing.assert_close(forward(model, batch)[0, :n], alone(model, a), atol=1e-5, rtol=0)  # a is first


def test_collate_labels_positions_and_device():
    exs = [Encoded([5, 6, 7], [5, 6, 7]), Encoded([8, 9], [IGNORE, 9]), Encoded([10], [10])]
    b = collate(exs, pad_id=PAD, packed=True, rows=[[0, 1], [2]], device="cpu")
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, PAD, PAD, PAD, PAD]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9], [IGNORE] * 5]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    p = collate(exs, pad_id=PAD, packed=False)
    assert p["input_ids"].tolist() == [[5, 6, 7], [8, 9, PAD], [10, PAD, PAD]]
    assert p["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE], [IGNORE] * 3]
    assert p["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    one = collate(exs, pad_id=PAD, packed=True)  # padding-free: one row, no pad
    assert one["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]] and one["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0]]


def test_pack_covers_every_example_once_within_max_length():
    rng = random.Random(3)
    for trial in range(30):
        max_length = rng.choice([16, 100, 512])
        lengths = [rng.randint(1, max_length) for _ in range(rng.randint(1, 300))]
        rows = pack(lengths, max_length)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in r) <= max_length for r in rows)
        # Best-fit decreasing stays within 11/9 of the optimum (and so of its lower bound) plus one row.
        assert len(rows) <= 11 / 9 * -(-sum(lengths) // max_length) + 1
        assert pack(list(lengths), max_length) == rows
    assert pack([], 8) == []
    assert pack([8, 8], 8) == [[0], [1]]
    assert pack([5, 3, 2, 6, 4], 10) == [[3, 4], [0, 1, 2]]  # 6, 5 open rows; 4 fills the first; 3 and 2 the second
    with pytest.raises(AlignError, match="example 1 has 9 tokens"):
        pack([3, 9], 8)
    with pytest.raises(AlignError, match="example 0 has 0 tokens"):
        pack([0], 8)
