"""Checkpoints verify themselves: a flipped byte, a truncated file or an undecodable one in any part (model, adapter, optimizer, RNG, state, PPO's value model) stops the resume with the file named; a killed save's temp folder is removed."""
from __future__ import annotations

import json

import pytest
import torch

from gristmill.train import TrainError, parallel
from gristmill.train.checkpoint import STATE, _self_hash, list_checkpoints
from gristmill.train.config import CheckpointConfig, LoopConfig, OptimConfig
from gristmill.train.trainer import Trainer


def tiny_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=32))


def tiny_value(seed: int = 1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=1, num_attention_heads=4, num_labels=1,
                                                      pad_token_id=0))


def lora(model, task_type: str):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type=task_type))


MODELS = {
    "full": lambda: tiny_lm(),  # part: model.safetensors
    "lora": lambda: lora(tiny_lm(), "CAUSAL_LM"),  # part: adapter.safetensors (the trainable weights only)
    "ppo": lambda: torch.nn.ModuleDict({"policy": lora(tiny_lm(), "CAUSAL_LM"),  # parts: policy, value
                                        "value": lora(tiny_value(), "SEQ_CLS")}),
}


def loss_fn(model, batch):
    """(summed loss, units): the LM's token loss, plus the value model's squared score when there is one."""
    parts = dict(model.items()) if isinstance(model, torch.nn.ModuleDict) else {"policy": model}
    out = parts["policy"](input_ids=batch, labels=batch)
    loss = out.loss * batch.numel()
    if "value" in parts:
        loss = loss + parts["value"](input_ids=batch).logits.pow(2).sum()
    return loss, batch.numel()


def run(kind: str, out, steps: int = 2):
    """A Trainer over `steps` updates with a checkpoint after each; returns it (its state after the run)."""
    cfg = LoopConfig(max_steps=steps, optim=OptimConfig(lr=1e-2, warmup_steps=0), checkpoint=CheckpointConfig(every=1, keep=3))
    model = MODELS[kind]()
    par = parallel.setup("cpu")
    t = Trainer(cfg, model, model, par, out_dir=out, run_id="r1", stage="test", max_steps=steps)
    t.start(enabled_log=False)
    x = torch.randint(1, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    while t.state.step < steps:
        t.set_lr()
        t.update(t.state.step + 1, [x], loss_fn)
        t.state.step += 1
        t.save()
    t.close()
    return t


def resume(kind: str, out):
    return run(kind, out, steps=2)


@pytest.mark.parametrize("kind, files", [
    ("full", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"]),
    ("lora", ["adapter.safetensors"]),
    ("ppo", ["policy.safetensors", "value.safetensors"]),
])
def test_a_flipped_byte_in_any_part_is_refused_naming_the_file(tmp_path, kind, files):
    run(kind, tmp_path)
    _, newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert sorted(f.name for f in newest.iterdir()) == sorted(
        set(files) | {"optimizer.safetensors", "rng.safetensors", STATE})
    resume(kind, tmp_path)  # intact: resumes without complaint
    for name in files:
        f = newest / name
        good = f.read_bytes()
        bad = bytearray(good)
        bad[-3] ^= 0x01  # one bit of the last tensor's data
        f.write_bytes(bytes(bad))
        with pytest.raises(TrainError) as e:
            resume(kind, tmp_path)
        msg = str(e.value)
        assert str(f) in msg and "sha256" in msg and f"delete {newest}" in msg and "\n" not in msg
        f.write_bytes(good[:len(good) // 2])  # truncated: also a hash mismatch, never a raw decode traceback
        with pytest.raises(TrainError, match="does not match"):
            resume(kind, tmp_path)
        f.write_bytes(good)


def test_state_json_edited_or_broken_is_refused(tmp_path):
    run("full", tmp_path)
    _, newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    f = newest / STATE
    good = f.read_text()
    doc = json.loads(good)
    doc["loop"]["cursor"] += 1  # a plausible edit: valid JSON, another data position
    f.write_text(json.dumps(doc))
    with pytest.raises(TrainError, match=r"state\.json: sha256 of its content .* does not match"):
        resume("full", tmp_path)
    f.write_text(good[:-20])  # cut: no longer JSON
    with pytest.raises(TrainError, match=r"state\.json: does not decode"):
        resume("full", tmp_path)


def test_a_part_that_matches_its_hash_but_does_not_decode_is_named(tmp_path):
    """A writer bug (garbage recorded with its own hash) still ends in one line naming the file."""
    from gristmill.manifests.hashing import sha256_file

    run("full", tmp_path)
    _, newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    (newest / "rng.safetensors").write_bytes(b"not a safetensors file")
    doc = json.loads((newest / STATE).read_text())
    doc["files"]["rng.safetensors"] = sha256_file(newest / "rng.safetensors")
    doc["state_sha256"] = _self_hash(doc)
    (newest / STATE).write_text(json.dumps(doc))
    with pytest.raises(TrainError, match=r"rng\.safetensors: does not decode"):
        resume("full", tmp_path)


def test_resume_restores_every_part_exactly(tmp_path):
    """Policy and value adapters and the optimizer come back bit for bit (the verified load is the real one)."""
    a = run("ppo", tmp_path / "a", steps=2)
    b = run("ppo", tmp_path / "b", steps=1)
    b = resume("ppo", tmp_path / "b")
    for (n, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), n


def test_a_killed_saves_temp_folder_is_removed_at_start(tmp_path, capsys):
    run("full", tmp_path, steps=1)
    left = tmp_path / "checkpoints" / ".step-00000002.abc123.tmp"
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"half")
    old = tmp_path / "checkpoints" / ".step-00000001.old"
    old.mkdir()
    run("full", tmp_path, steps=2)
    assert not left.exists() and not old.exists()
    assert ".step-00000002.abc123.tmp" in capsys.readouterr().out  # tqdm.write: stdout
