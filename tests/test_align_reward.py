"""The reward stage: Bradley-Terry against its formula, separable pairs learned, padding-side invariance, length bias, lineage."""
from __future__ import annotations

import math

import pytest
import torch

from align_helpers import pair_records, reward_config, sft_chain, write_jsonl
from gristmill.align.losses import bradley_terry, reward_centering
from gristmill.align.reward import EncodedPair, bias_metrics, collate_pairs, run_reward, spearman
from gristmill.manifests import format_lineage, lineage, verify


def test_bradley_terry_equals_minus_logsigmoid_of_the_margin():
    rc = torch.tensor([2.0, -1.0, 0.5, 30.0])
    rr = torch.tensor([1.0, 1.0, 0.5, -30.0])
    want = [math.log1p(math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist())]
    assert torch.allclose(bradley_terry(rc, rr), torch.tensor(want), atol=1e-7)
    m = torch.tensor([0.5, 0.0, 1.0, 0.0])
    want_m = [math.log1p(math.exp(-(c - r - k))) for c, r, k in zip(rc.tolist(), rr.tolist(), m.tolist())]
    assert torch.allclose(bradley_terry(rc, rr, m), torch.tensor(want_m), atol=1e-7)
    assert torch.equal(reward_centering(rc, rr), (rc + rr) ** 2)


def test_spearman_matches_the_closed_form_and_handles_ties():
    x = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    y = [10.0, 20.0, 30.0, 5.0, 50.0, 40.0]
    rank = lambda v: [sorted(v).index(a) for a in v]  # noqa: E731 - no ties here
    d2 = sum((a - b) ** 2 for a, b in zip(rank(x), rank(y)))
    n = len(x)
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_bias_metrics_count_length_bias():
    pairs = [EncodedPair([1], [1], chosen_len=c, rejected_len=r, margin=0.0, truncated=False)
             for c, r in ((5, 10), (10, 5), (3, 9), (8, 2))]
    # a reward that is just "longer is better": right whenever chosen is longer, wrong whenever it is shorter
    mt = bias_metrics([float(p.chosen_len) for p in pairs], [float(p.rejected_len) for p in pairs], pairs)
    assert mt["accuracy_chosen_shorter"] == 0.0 and mt["pairs_chosen_shorter"] == 2
    assert mt["length_spearman"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """curate (fake) -> tokenize -> pretrain -> sft -> reward, all tiny."""
    root = tmp_path_factory.mktemp("reward")
    sft = sft_chain(root)
    pairs = write_jsonl(root / "pairs.jsonl", pair_records(200))
    out = root / "reward"
    return sft, pairs, out, run_reward(reward_config(max_steps=30), {"model": [sft], "data": [pairs]}, out)


def test_reward_model_learns_separable_pairs(chain):
    _, _, out, m = chain
    assert m.metrics["eval_accuracy"] >= 0.9 and m.metrics["reward_accuracy"] == m.metrics["eval_accuracy"]
    assert m.metrics["pairs_eval"] >= 20 and m.metrics["eval_margin"] > 0
    assert m.metrics["length_spearman"] is not None and -1 <= m.metrics["length_spearman"] <= 1
    assert verify(out) == [] and "length bias" in (out / "report.md").read_text()


def test_saved_reward_model_scores_the_same_with_left_and_right_padding(chain):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, out, _ = chain
    model = AutoModelForSequenceClassification.from_pretrained(out / "model", local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out / "model", local_files_only=True)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    convs = [[{"role": "user", "content": "Tell me about river."}, {"role": "assistant", "content": a}]
             for a in ("good good", "bad river stone bad", "good")]
    seqs = [tok.apply_chat_template(c, return_dict=True)["input_ids"] for c in convs]
    width = max(map(len, seqs))

    def scores(left: bool) -> torch.Tensor:
        ids = torch.full((len(seqs), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, sl], mask[i, sl] = torch.tensor(s), 1
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits[:, 0]

    alone = torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs]).detach()
    assert torch.allclose(scores(left=False), alone, atol=1e-5)
    assert torch.allclose(scores(left=True), alone, atol=1e-4)
    assert alone[0] > alone[1]  # "good" beats "bad"


def test_collate_pairs_shares_the_prompt_and_keeps_chosen_and_rejected_apart():
    pairs = [EncodedPair([1, 2, 3], [1, 2, 4, 5], 1, 2, 0.5, False), EncodedPair([6], [7, 8, 9, 10], 1, 3, 0.0, False)]
    b = collate_pairs(pairs, pad_id=0, max_length=8)
    # [1 2 | 3 | 4 5]: the prompt once, then each tail; the second pair shares nothing: [| 6 | 7 8 9 10]
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]] and b["margin"].tolist() == [0.5, 0.0]
    assert b["position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 0, 1, 2, 3]]
    assert b["input_ids"].view(-1)[b["last"]].tolist() == [3, 5, 6, 10]  # chosen, rejected of each pair
    small = [EncodedPair([1, 2], [1, 3], 1, 1, 0.0, False)] * 3
    assert collate_pairs(small, pad_id=0, max_length=8)["input_ids"].tolist() == [[1, 2, 3] * 2, [1, 2, 3, 0, 0, 0]]
    assert collate_pairs(small, pad_id=0, max_length=8, packed=False)["input_ids"].shape == (3, 3)


def test_lineage_walks_from_the_reward_model_back_to_curate(chain):
    _, _, out, m = chain
    chain_of_stages, node = [], lineage(out)
    while node is not None and node.manifest is not None:  # follow the model input upwards
        chain_of_stages.append(node.manifest.stage)
        node = next((p for p in node.parents if p.manifest is not None), None)
    assert chain_of_stages == ["reward", "sft", "pretrain", "tokenize", "curate"]
    text = format_lineage(lineage(out))
    assert m.id in text and "reward_accuracy" in text


def test_loop_eval_equals_a_hand_computation(chain):
    """The loop's eval_loss / eval_accuracy / eval_margin (the stage's Bradley-Terry loss on held-out pairs) equal
    -log sigmoid(r_c - r_r), the share ranked right and the mean margin, computed here pair by pair from the
    saved model's scores."""
    import math

    from transformers import AutoModelForSequenceClassification

    from gristmill.align.chat import encode_chat
    from gristmill.align.data import DataConfig, load_preferences, split_eval
    from gristmill.align.models import load_tokenizer
    from gristmill.config import build

    _, pairs, out, m = chain
    tok = load_tokenizer(out / "model")
    dc = build(DataConfig, m.config["data"], section="reward.data")
    _, held = split_eval(load_preferences([pairs], dc, stage="reward").records, dc.eval_fraction)
    model = AutoModelForSequenceClassification.from_pretrained(out / "model", dtype=torch.float32).eval()

    def score(messages):
        e = encode_chat(tok, messages, max_length=m.config["max_length"], completion_turns=1)
        with torch.no_grad():
            return model(input_ids=torch.tensor([e.input_ids])).logits[0, 0].item()

    d = [score(p.prompt + p.chosen) - score(p.prompt + p.rejected) for p in held]
    assert m.metrics["pairs_eval"] == len(held)
    assert m.metrics["eval_loss"] == pytest.approx(sum(math.log1p(math.exp(-x)) for x in d) / len(d), rel=1e-4)
    assert m.metrics["eval_accuracy"] == pytest.approx(sum(x > 0 for x in d) / len(d))
    assert m.metrics["eval_margin"] == pytest.approx(sum(d) / len(d), rel=1e-4, abs=1e-5)
