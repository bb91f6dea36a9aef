"""Reward scores and the group layout: prompt-sharing packed and one-group-per-row batches score each sequence as the classifier alone does, LoRA included."""
from __future__ import annotations

import random

import pytest
import torch

from gristmill.align import AlignError
from gristmill.align.layout import lay_out_groups, shared_prefix
from gristmill.align.scoring import SequenceScorer, collate_groups

PAD = 1
VOCAB = 300


def classifier(seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, num_labels=1,
                      pad_token_id=PAD)
    return LlamaForSequenceClassification._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()


def groups(n: int, lo: int, hi: int, seed: int = 0) -> list[list[list[int]]]:
    """Groups of 1-3 sequences: a shared random prompt (sometimes none) and random tails, some tails
    starting with the same tokens (so the shared prefix runs past the prompt), one tail a prefix of another."""
    rng = random.Random(seed)
    out = []
    for g in range(n):
        prompt = [rng.randrange(4, VOCAB) for _ in range(rng.choice([0, rng.randint(lo, hi)]))]
        common = [rng.randrange(4, VOCAB) for _ in range(rng.choice([0, 0, 3]))]
        tails = [common + [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, hi))] for _ in range(rng.randint(1, 3))]
        if g == 0:
            tails = [[7, 8, 9], [7, 8, 9, 10, 11]]
        out.append([prompt + t for t in tails])
    return out


def alone(model, seqs: list[list[int]]) -> torch.Tensor:
    """The classifier's own forward, one unpadded sequence at a time: the reference."""
    with torch.no_grad():
        return torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs])


def test_shared_prefix_leaves_each_sequence_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # [1, 2, 3] keeps its last token
    assert shared_prefix([[1, 2], [1, 2]]) == 1 and shared_prefix([[5, 6]]) == 0 and shared_prefix([[1], [2]]) == 0


def test_layout_masks_keep_tails_apart():
    lay = lay_out_groups([[[1, 2, 3, 4], [1, 2, 5]], [[6]]], pad_id=0, max_length=8, packed=True)
    assert lay.batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]] and lay.tokens == 6
    assert lay.batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0]]
    assert lay.index == [[0, 1, 2, 3], [0, 1, 4], [5]]
    m = lay.batch["attention_mask"][0, 0].int().tolist()
    assert m[4] == [1, 1, 0, 0, 1, 0]  # the second tail: the prefix and itself, not the first tail
    assert m[3] == [1, 1, 1, 1, 0, 0] and m[5] == [0, 0, 0, 0, 0, 1]  # no attention across groups


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("packed", [True, False])
def test_group_scores_equal_each_sequence_alone(lora, packed):
    model = classifier()
    with torch.no_grad():  # a score head that is not ~0, so that a wrong token position shows
        model.score.weight.normal_(0, 1.0)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.eval()
    gs = groups(9, 3, 30)
    seqs = [s for g in gs for s in g]
    want = alone(model, seqs)
    batch = collate_groups(gs, pad_id=PAD, max_length=64, packed=packed)
    assert batch["attention_mask"].shape[1] == 1 and batch["attention_mask"].dtype == torch.bool
    assert (batch["input_ids"].shape[0] < len(gs)) == packed  # packed rows hold several groups
    with torch.no_grad():
        got = SequenceScorer(model)(**batch)
    assert got.shape == (len(seqs),) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert batch["input_ids"].view(-1)[batch["last"]].tolist() == [s[-1] for s in seqs]


def test_scorer_gradients_reach_the_adapters_and_the_head():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(classifier(), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0,
                                                    target_modules=["q_proj", "v_proj"]))
    batch = collate_groups(groups(6, 5, 20, seed=2), pad_id=PAD, packed=True, max_length=64)
    SequenceScorer(model)(**batch).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_B" in n for n in grads) and any("score" in n for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n or "score" in n)


def test_a_model_without_a_score_head_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM._from_config(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=1, num_attention_heads=4))
    with pytest.raises(AlignError, match="score"):
        SequenceScorer(lm)
