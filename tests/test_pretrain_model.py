"""Config checks and model presets: sizes in their stated ranges, field errors that say what to change."""
from __future__ import annotations

import pytest

from gristmill.config import ConfigError, build
from gristmill.pretrain.config import PretrainConfig


def meta_params(preset: str, vocab: int) -> int:
    import torch
    from transformers import LlamaForCausalLM

    from gristmill.pretrain.model import count_params, llama_config

    cfg = llama_config(PretrainConfig(preset=preset), vocab_size=vocab, eos_id=0)
    with torch.device("meta"):  # shapes only: no memory, no init time
        return count_params(LlamaForCausalLM(cfg))["params"]


@pytest.mark.parametrize("preset, vocab, low, high", [
    ("tiny", 8192, 1e6, 3e6), ("tiny", 2048, 1e6, 3e6),
    ("small", 8192, 20e6, 30e6), ("small", 2048, 20e6, 30e6),
    ("124m", 50257, 115e6, 130e6),
])
def test_preset_sizes(preset, vocab, low, high):
    assert low <= meta_params(preset, vocab) <= high


def test_explicit_fields_override_the_preset_and_reach_the_model():
    from gristmill.pretrain.model import llama_config

    cfg = build(PretrainConfig, {"preset": "small", "num_layers": 3, "num_kv_heads": 2, "seq_len": 128,
                                 "tie_embeddings": False}, section="pretrain")
    lc = llama_config(cfg, vocab_size=1000, eos_id=3, pad_id=4)
    assert (lc.hidden_size, lc.num_hidden_layers, lc.num_attention_heads, lc.num_key_value_heads) == (512, 3, 8, 2)
    assert lc.vocab_size == 1024 and lc.max_position_embeddings == 128 and not lc.tie_word_embeddings
    assert (lc.eos_token_id, lc.pad_token_id) == (3, 4)


@pytest.mark.parametrize("fields, words", [
    ({"optim": {"warmup_steps": 50}, "max_steps": 10}, "pretrain.optim.warmup_steps=50"),
    ({"hidden_size": 100, "num_heads": 3}, "num_heads=3"),
    ({"num_heads": 4, "num_kv_heads": 3}, "num_kv_heads"),
    ({"batch_size": 0}, "pretrain.batch_size=0"),
    ({"spike": {"lr_factor": 2.0}}, "spike.lr_factor"),
    ({"spike": {"k": 9, "m": 3}}, "spike.m"),
    ({"optim": {"lr": -1}}, "optim.lr=-1"),
    ({"optim": {"lrr": 1}}, "pretrain.optim] unknown key"),
    ({"preset": "huge"}, "huge"),
])
def test_bad_values_name_the_field(fields, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("=", "=")):
        build(PretrainConfig, fields, section="pretrain")


def test_config_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, gristmill.pretrain.config; print(any(m in sys.modules for m in ('torch', 'transformers', 'numpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
