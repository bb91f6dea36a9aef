"""Shared pieces of the align tests: a ChatML tokenizer and a tiny Llama base folder built in tmp_path, and task data."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pretrain_helpers import merged

WORDS = ["garden", "river", "stone", "cloud", "apple", "window", "market", "silver", "forest", "candle"]


def sft_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A learnable synthetic task with a fixed answer format around a varying word, and the answer for the checker."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        w = r.choice(WORDS) if r.random() < 0.5 else "".join(r.choice("abcdeilmnorst") for _ in range(r.randint(3, 6)))
        out.append({"instruction": f"Reverse {w}.", "response": f"The word {w} reversed is {w[::-1]}.",
                    "answer": w[::-1]})
    return out


def pair_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Separable preference pairs: chosen says "good", rejected says "bad" (plus noise words)."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        w = r.choice(WORDS)
        noise = " ".join(r.choice(WORDS) for _ in range(r.randint(0, 3)))
        out.append({"prompt": f"Tell me about {w}.", "chosen": f"good {noise} good".strip(),
                    "rejected": f"bad {noise} bad".strip()})
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_base(folder: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2, context: int = 128) -> Path:
    """A raw Hugging Face folder: a randomly initialised tiny Llama and a ChatML BPE tokenizer (no manifest)."""
    from gristmill.pretrain.config import PretrainConfig
    from gristmill.train.config import OptimConfig
    from gristmill.pretrain.model import build_model, llama_config, save_hf_folder
    from gristmill.tokenize.train import CHATML_TEMPLATE, EOS, PAD, save_folder, train_tokenizer

    texts = [f"Reverse {w}. {w[::-1]} Tell me about {w}. good bad" for w in WORDS] * 20
    tok = train_tokenizer(texts, vocab_size=320)
    tok_dir = folder.parent / f"{folder.name}-tokenizer"
    save_folder(tok_dir, tok, eos_token=EOS, pad_token=PAD, chat_template=CHATML_TEMPLATE)
    cfg = PretrainConfig(hidden_size=hidden, num_layers=layers, num_heads=4, intermediate_size=2 * hidden,
                         seq_len=context, max_steps=1, optim=OptimConfig(warmup_steps=0))
    lc = llama_config(cfg, vocab_size=tok.get_vocab_size(), eos_id=tok.token_to_id(EOS), pad_id=tok.token_to_id(PAD))
    save_hf_folder(build_model(lc, seed=seed), folder, tokenizer_dir=tok_dir)
    return folder


def sft_config(**overrides: Any):
    """A fast SFTConfig for the tiny base."""
    from gristmill.align.config import SFTConfig
    from gristmill.config import build

    base = dict(max_steps=30, batch_size=4, max_length=64, device="cpu", eval_generate=8, samples=2,
                max_new_tokens=8, optim={"lr": 1e-2, "warmup_steps": 3}, checkpoint={"every": 10},
                spike={"window": 16}, data={"eval_fraction": 0.1})
    return build(SFTConfig, merged(base, overrides), section="sft")


def reward_config(**overrides: Any):
    from gristmill.align.config import RewardConfig
    from gristmill.config import build

    base = dict(max_steps=30, batch_size=8, max_length=64, device="cpu", optim={"lr": 3e-3, "warmup_steps": 3},
                checkpoint={"every": 10}, spike={"window": 8}, data={"eval_fraction": 0.2})
    return build(RewardConfig, merged(base, overrides), section="reward")


def dpo_config(**overrides: Any):
    from gristmill.align.config import DPOConfig
    from gristmill.config import build

    base = dict(max_steps=30, batch_size=8, max_length=64, device="cpu", beta=0.5,
                optim={"lr": 1e-2, "warmup_steps": 3}, checkpoint={"every": 10}, spike={"window": 8},
                data={"eval_fraction": 0.2}, judge_prompts=8, samples=2, max_new_tokens=6)
    return build(DPOConfig, merged(base, overrides), section="dpo")


def sft_chain(root: Path) -> Path:
    """curate (fake) -> tokenize -> pretrain -> sft, all tiny, under `root`; returns the sft folder."""
    from gristmill.align.sft import run_sft
    from gristmill.pretrain.run import run_pretrain
    from pretrain_helpers import make_tokens, tiny

    tok = make_tokens(root / "tok")
    base = root / "pretrain"
    run_pretrain(tiny(max_steps=10, checkpoint={"every": 10}), {"data": [tok]}, base)
    sft = root / "sft"
    run_sft(sft_config(max_steps=6, eval_generate=0, samples=0), {"model": [base],
            "data": [write_jsonl(root / "sft.jsonl", sft_records(80))]}, sft)
    return sft


def retemplated_copy(src: Path, dst: Path) -> Path:
    """A copy of a finished sft folder whose chat template differs by one space, its manifest re-recording
    the file's hash: the files verify, but the template is not the one the stage recorded."""
    import shutil

    from gristmill.manifests import output_record, read_manifest, write_manifest

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    cfg_path = dst / "model" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("<|im_start|>", "<|im_start|> ")
    cfg_path.write_text(json.dumps(cfg))
    man = read_manifest(dst)
    man.outputs = [output_record(dst, o.path, o.kind) if o.path == "model/tokenizer_config.json" else o
                   for o in man.outputs]
    write_manifest(dst, man)
    return dst
