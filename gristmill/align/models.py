"""Models for alignment: the HF folder behind an input, loaded offline with its tokenizer; LoRA; merged saves; template checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gristmill.align import AlignError
from gristmill.align.chat import check_template, pad_id, template_info
from gristmill.manifests import MANIFEST_NAME, read_manifest
from gristmill.pretrain.model import save_hf_folder


def model_dir(path: str | Path) -> Path:
    """The Hugging Face folder behind an input: a gristmill stage folder's `model/`, or the folder itself."""
    p = Path(path)
    if (p / MANIFEST_NAME).is_file() and (p / "model" / "config.json").is_file():
        return p / "model"
    if (p / "config.json").is_file():
        return p
    raise AlignError(f"{p}: no Hugging Face model here (no config.json, and not a gristmill stage folder with "
                     "model/); give a pretrain / sft folder or a local HF model folder")


def recorded_template(path: str | Path) -> dict | None:
    """The chat template a gristmill stage folder's manifest recorded (metrics.template), if any."""
    p = Path(path)
    if not (p / MANIFEST_NAME).is_file():
        return None
    return read_manifest(p).metrics.get("template")


def check_same_template(got: dict, expected: dict | None, *, where: str, expected_from: str) -> None:
    """Refuse a tokenizer whose template or special tokens differ from what the upstream stage trained with."""
    if not expected:
        return
    keys = ("chat_template_sha256", "eos_token", "pad_token")
    diff = [k for k in keys if got.get(k) != expected.get(k)]
    if diff:
        both = "; ".join(f"{k}: {expected.get(k)!r} in {expected_from} vs {got.get(k)!r} in {where}" for k in diff)
        raise AlignError(f"{where}: the chat template differs from the one its model was trained with ({both}). "
                         "Every stage after SFT must use the SFT model's own tokenizer folder")


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, offline; it must have a chat template and something to pad with."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise AlignError(f"{folder}: cannot load a tokenizer ({e})") from None
    check_template(tok, str(folder))
    return tok


def check_weights(folder: Path) -> None:
    """The folder's safetensors weights are all there: transformers would otherwise stop with a bare OSError
    (no file) or a traceback deep in loading (a shard that the index lists but the folder lacks)."""
    import json

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise AlignError(f"{index}: not a safetensors index (a JSON object with a weight_map): {e}") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise AlignError(f"{index}: lists {len(shards)} weight shard(s) but {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} missing from {folder}; copy the whole model folder")
    elif not (folder / "model.safetensors").is_file():
        raise AlignError(f"{folder}: no model.safetensors (nor model.safetensors.index.json) here: the model's weights "
                         "are missing; copy the whole model folder (gristmill reads safetensors only)")


def load_causal_lm(folder: Path, *, pad: int | None = None) -> Any:
    """AutoModelForCausalLM from a local folder: fp32 weights, SDPA attention, safetensors only."""
    import torch
    from transformers import AutoModelForCausalLM

    check_weights(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                 attn_implementation="sdpa", use_safetensors=True)
    if pad is not None:
        model.config.pad_token_id = pad
    return model


def load_reward_model(folder: Path, *, pad: int, seed: int) -> Any:
    """A one-output sequence classifier on the folder's weights; a new score head is initialised from `seed`.

    pad_token_id goes into the config: the classifier reads the score at the last non-pad token."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    check_weights(folder)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point, not a warning
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=1, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa",
            use_safetensors=True, pad_token_id=pad)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = pad
    return model


def add_lora(model: Any, cfg: Any, *, task_type: str, seed: int) -> Any:
    """Wrap `model` in peft LoRA adapters (`cfg`: LoraConfig); the base weights are frozen.

    task_type "CAUSAL_LM" or "SEQ_CLS" (peft then also trains the score head in full)."""
    import torch
    from peft import LoraConfig, get_peft_model

    linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in cfg.target_modules if t not in linears]
    if missing:
        raise AlignError(f"lora.target_modules: {', '.join(missing)} not in this model; its linear layers are "
                         f"{', '.join(linears)}")
    torch.manual_seed(seed)
    peft_cfg = LoraConfig(task_type=task_type, r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules))
    return get_peft_model(model, peft_cfg)


def save_outputs(model: Any, out: Path, *, tokenizer_dir: Path) -> dict[str, list[Path]]:
    """adapter/ (peft format, when `model` has adapters) and model/ (merged, plain HF folder with the tokenizer).

    Returns the files of each, relative to `out`. Merging folds the adapters into the weights in place."""
    from gristmill.manifests import atomic_folder

    files: dict[str, list[Path]] = {}
    if hasattr(model, "peft_config"):
        with atomic_folder(out / "adapter") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        files["adapter"] = sorted(p.relative_to(out) for p in (out / "adapter").rglob("*") if p.is_file())
        model = model.merge_and_unload()
    saved = save_hf_folder(model, out / "model", tokenizer_dir=tokenizer_dir)
    files["model"] = [Path("model") / f for f in saved]
    return files


def describe_tokenizer(tok: Any) -> dict:
    """template_info plus the pad id batches use (JSON-ready, for the manifest)."""
    return template_info(tok) | {"pad_id_used": pad_id(tok)}
