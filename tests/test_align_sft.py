"""The sft stage end to end on a tiny model: eval loss falls, the merged folder and the adapter load, resume is exact, templates are checked."""
from __future__ import annotations


import pytest
import torch

from align_helpers import sft_config, sft_records, tiny_base, write_jsonl
from faults import Killed, kill_at
from gristmill.align import AlignError
from gristmill.align.sft import run_sft
from gristmill.manifests import verify
from pretrain_helpers import rows


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    return tiny_base(root / "base"), write_jsonl(root / "sft.jsonl", sft_records(240))


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    model, data = base
    out = tmp_path_factory.mktemp("sft") / "out"
    return out, run_sft(sft_config(max_steps=24), {"model": [model], "data": [data]}, out)


def test_sft_lowers_eval_loss_and_writes_a_verified_folder(trained):
    out, m = trained
    mt = m.metrics
    assert mt["eval_loss"] < mt["eval_loss_before"] - 0.3, mt  # LoRA on a random tiny base: ~5.7 -> ~5.1
    assert mt["eval_token_accuracy"] > mt["eval_token_accuracy_before"]
    assert mt["examples_train"] + mt["examples_eval"] == 240 and mt["packing_efficiency"] > 0.5
    assert mt["template"]["chat_template_sha256"] and mt["template"]["eos_token"] == "<|endoftext|>"
    assert mt["answers_checked"] > 0 and 0.0 <= mt["answer_accuracy"] <= 1.0
    assert verify(out) == [] and (out / "report.md").read_text().startswith(f"# sft {m.id}")
    assert {o.kind for o in m.outputs} >= {"adapter", "model", "metrics", "plot", "report"}
    logged = rows(out)
    assert sorted(logged) == list(range(1, 25)) and "eval_loss" in logged[24]
    # samples.jsonl (the run report's base -> SFT answers): its first rows are the checked prompts, so their marks
    # give back the manifest's accuracies
    import json
    answered = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()][:mt["answers_checked"]]
    assert m.output("samples.jsonl").records >= len(answered) == mt["answers_checked"]
    for key, acc in (("correct_before", "answer_accuracy_before"), ("correct_after", "answer_accuracy")):
        assert sum(r[key] for r in answered) / len(answered) == pytest.approx(mt[acc])


def test_merged_folder_loads_and_equals_base_plus_adapter(base, trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = trained
    merged = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out / "model", local_files_only=True)
    ids = tok.apply_chat_template([{"role": "user", "content": "Reverse stone."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        want = merged(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base[0], local_files_only=True),
                                            out / "adapter").eval()
        got = adapted(input_ids=ids).logits
        again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base[0], local_files_only=True),
                                          out / "adapter").eval()(input_ids=ids).logits
    assert torch.equal(got, again)  # the saved adapter loads to the same function every time
    assert torch.allclose(got, want, atol=1e-5)  # ... and merging it changes nothing but float rounding
    assert merged.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


def test_killed_and_resumed_run_is_bit_identical(base, trained, tmp_path):
    model, data = base
    straight_dir, straight = trained
    out = tmp_path / "stopped"
    with pytest.raises(Killed):
        run_sft(sft_config(max_steps=24), {"model": [model], "data": [data]}, out, hooks=kill_at(15))
    assert not (out / "manifest.json").exists()
    resumed = run_sft(sft_config(max_steps=24), {"model": [model], "data": [data]}, out)
    assert resumed.id == straight.id and resumed.metrics["resumed_from_step"] == 10
    a, b = rows(straight_dir), rows(out)
    for step in range(1, 25):
        for key in ("loss", "grad_norm", "lr", "eval_loss", "tokens"):
            assert a[step].get(key) == b[step].get(key), (step, key)
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        assert resumed.output(name).sha256 == straight.output(name).sha256


def test_full_fine_tuning_and_a_second_run_is_skipped(base, tmp_path):
    model, data = base
    cfg = sft_config(max_steps=6, lora={"enabled": False}, optim={"lr": 1e-3}, eval_generate=0, samples=0)
    m = run_sft(cfg, {"model": [model], "data": [data]}, tmp_path / "full")
    assert not m.metrics["lora"] and m.metrics["trainable_params"] == m.metrics["params"]
    assert m.metrics["eval_loss"] < m.metrics["eval_loss_before"]
    assert not (tmp_path / "full" / "adapter").exists()
    again = run_sft(cfg, {"model": [model], "data": [data]}, tmp_path / "full")
    assert again.created == m.created  # finished: skipped, not re-run


def test_bad_settings_fail_early_naming_the_field(base, tmp_path):
    model, data = base
    with pytest.raises(AlignError, match=r"sft.max_length=512 exceeds the model's context"):
        run_sft(sft_config(max_length=512), {"model": [model], "data": [data]}, tmp_path / "a")
    with pytest.raises(AlignError, match=r"lora.target_modules: qkv_proj not in this model"):
        run_sft(sft_config(lora={"target_modules": ["qkv_proj"]}), {"model": [model], "data": [data]}, tmp_path / "b")
    bad = write_jsonl(tmp_path / "bad.jsonl", sft_records(5) + [{"instruction": "x"}])
    with pytest.raises(AlignError, match=r"bad.jsonl:6"):
        run_sft(sft_config(), {"model": [model], "data": [bad]}, tmp_path / "c")


def test_a_model_whose_template_differs_from_its_manifest_is_refused(trained, tmp_path):
    from align_helpers import pair_records, retemplated_copy, reward_config
    from gristmill.align.reward import run_reward

    out, m = trained
    # a careful user re-records the hash: the files verify, but the template is not the one SFT trained with
    copy = retemplated_copy(out, tmp_path / "sft")
    assert verify(copy) == []
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_records(40))
    with pytest.raises(AlignError) as err:
        run_reward(reward_config(), {"model": [copy], "data": [pairs]}, tmp_path / "rw")
    msg = str(err.value)
    assert m.metrics["template"]["chat_template_sha256"] in msg and "chat_template_sha256" in msg
    assert "differs from the one its model was trained with" in msg


def test_loop_eval_equals_a_hand_computation(base, trained):
    """The loop's eval_loss / eval_token_accuracy (sft_loss on held-out rows, in eval mode) equal cross-entropy
    and argmax accuracy over every assistant token of the held-out examples, computed here on the saved model
    from full logits, one example at a time."""
    from transformers import AutoModelForCausalLM

    from gristmill.align.chat import IGNORE, encode_chat
    from gristmill.align.data import DataConfig, load_sft, split_eval
    from gristmill.align.models import load_tokenizer
    from gristmill.config import build

    _, data = base
    out, m = trained
    tok = load_tokenizer(out / "model")
    dc = build(DataConfig, m.config["data"], section="sft.data")
    _, held = split_eval(load_sft([data], dc, stage="sft").records, dc.eval_fraction)
    model = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    loss = correct = count = 0.0
    with torch.no_grad():
        for ex in held:
            e = encode_chat(tok, ex.messages, max_length=m.config["max_length"])
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1]  # (T-1, V)
            y = torch.tensor(e.labels[1:])
            sel = y != IGNORE
            loss += torch.nn.functional.cross_entropy(logits[sel], y[sel], reduction="sum").item()
            correct += (logits[sel].argmax(-1) == y[sel]).sum().item()
            count += sel.sum().item()
    assert m.metrics["examples_eval"] == len(held)
    assert m.metrics["eval_loss"] == pytest.approx(loss / count, rel=1e-4)  # merged LoRA: float error only
    assert m.metrics["eval_token_accuracy"] == pytest.approx(correct / count, abs=1.5 / count)
