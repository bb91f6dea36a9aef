"""The model: a transformers LlamaForCausalLM built from a size preset, its parameter counts, and the HF folder it is saved as."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gristmill.manifests import atomic_folder
from gristmill.pretrain.config import PretrainConfig
from gristmill.tokenize.train import TOKENIZER_FILES


def padded_vocab(vocab_size: int, multiple: int = 64) -> int:
    """Embedding rows: the tokenizer's vocabulary rounded up (matmul shapes in multiples of 64 run faster)."""
    return -(-vocab_size // multiple) * multiple


def llama_config(cfg: PretrainConfig, *, vocab_size: int, eos_id: int, bos_id: int | None = None,
                 pad_id: int | None = None) -> Any:
    """A transformers LlamaConfig of the configured shape for a tokenizer of `vocab_size` ids."""
    from transformers import LlamaConfig

    shape = cfg.model_shape()
    return LlamaConfig(
        vocab_size=padded_vocab(vocab_size),
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=cfg.seq_len,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=bos_id if bos_id is not None else eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
        use_cache=True,  # for generation from the saved folder; training passes use_cache=False
    )


def build_model(config: Any, *, seed: int) -> Any:
    """LlamaForCausalLM with SDPA attention, fp32 weights, initialised from `seed`."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)


def count_params(model: Any) -> dict[str, int]:
    """{"params": unique parameters (a tied embedding counted once), "non_embedding": without the input embedding}."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings().weight.numel()
    return {"params": total, "non_embedding": total - emb}


def save_hf_folder(model: Any, folder: Path, *, tokenizer_dir: Path | None = None,
                   state_dict: dict[str, Any] | None = None) -> list[Path]:
    """Write a plain HF model folder atomically: build it in a hidden sibling, then rename.

    `state_dict` (full, unsharded) overrides the model's own weights (used under FSDP). Tokenizer
    files are copied in so the folder is self-contained. Returns the files written, relative to `folder`.
    """
    from transformers import GenerationConfig

    folder = Path(folder)
    model.generation_config = GenerationConfig(bos_token_id=model.config.bos_token_id,
                                               eos_token_id=model.config.eos_token_id,
                                               pad_token_id=model.config.pad_token_id)
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        if tokenizer_dir is not None:
            for f in sorted(Path(tokenizer_dir).iterdir()):
                if f.is_file() and not f.name.startswith(".") and f.name in TOKENIZER_FILES:
                    shutil.copy2(f, tmp / f.name)
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
