"""Train a byte-level BPE, or take a given one, and save it as a Hugging Face tokenizer folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from gristmill.manifests import MANIFEST_NAME, atomic_folder, read_manifest
from gristmill.tokenize import TokenizeError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

EOS, PAD, IM_START, IM_END = "<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"

# ChatML. The assistant turn (content + <|im_end|>) sits in {% generation %} so that
# apply_chat_template(..., return_assistant_tokens_mask=True) marks exactly the tokens SFT trains on.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Files of a Hugging Face folder that make up its tokenizer (weights and model config are left behind).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt")


def build_bpe(*, split_digits: bool) -> "Tokenizer":
    """An untrained byte-level BPE whose decode(encode(x)) == x for any string x.

    No normalizer (NFC would change the text), no prefix space, offsets untrimmed: nothing is
    added or removed on the way in, so the byte-level decoder gives back the exact input.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2, split_digits: bool = False,
                    eos_token: str = EOS) -> "Tokenizer":
    """Train a byte-level BPE on `texts` (streamed). Special tokens get ids 0-3: eos, pad, im_start, im_end.

    With little text the trainer stops early, so the vocabulary can be smaller than `vocab_size`.
    """
    from tokenizers import pre_tokenizers, trainers

    tok = build_bpe(split_digits=split_digits)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=special_tokens(eos_token),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def special_tokens(eos_token: str = EOS) -> list[str]:
    return [eos_token, PAD, IM_START, IM_END]


def save_folder(folder: Path, tok: "Tokenizer", *, eos_token: str, pad_token: str | None, chat_template: str | None,
                tokenizer_json: Path | None = None) -> None:
    """Write a folder that `transformers.AutoTokenizer.from_pretrained` loads offline (transformers 4 and 5).

    tokenizer.json is `tok` serialised, or `tokenizer_json` (the file `tok` was read from) copied byte for
    byte; beside it tokenizer_config.json (PreTrainedTokenizerFast, eos / pad, chat template) and
    special_tokens_map.json.
    Written without importing transformers (seconds of import for three small files). The folder is
    filled under a hidden temporary name and renamed: a crash leaves no half folder.
    """
    extra = [t for t in (IM_START, IM_END) if tok.token_to_id(t) is not None and t not in (eos_token, pad_token)]
    special = {"eos_token": eos_token, **({"pad_token": pad_token} if pad_token else {}),
               **({"additional_special_tokens": extra} if extra else {})}
    # additional_special_tokens (not transformers 5's extra_special_tokens, a dict in transformers 4)
    # and chat_template inside the config are what both major versions read.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, **special,
              "clean_up_tokenization_spaces": False, **({"chat_template": chat_template} if chat_template else {})}

    def write(tmp: Path) -> None:
        if tokenizer_json is not None:
            shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        else:
            tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")

    _atomic_folder(folder, write)


def import_tokenizer(src: Path, folder: Path, eos_token: str | None) -> tuple["Tokenizer", str]:
    """Copy a given tokenizer into `folder` as an HF folder; returns it and its end-of-document token.

    `src`: an HF folder with tokenizer.json, a tokenizer.json file, or a finished tokenize folder.
    The eos is `eos_token` when given, else the tokenizer's own eos_token, else <|endoftext|>.
    """
    src = Path(src)
    if (src / MANIFEST_NAME).is_file():
        m = read_manifest(src)
        if m.stage != "tokenize":
            raise TokenizeError(f"--tokenizer {src}: a {m.stage!r} stage folder; give a tokenize folder, an HF "
                                "tokenizer folder or a tokenizer.json")
        src = src / "tokenizer"
    tok_json = src if src.is_file() else src / "tokenizer.json"
    if not tok_json.is_file():
        raise TokenizeError(f"--tokenizer {src}: no tokenizer.json there; gristmill needs a fast (tokenizers) "
                            "tokenizer: save it with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`")
    tok = _load(tok_json)
    def has(t: str) -> bool:  # token_to_id, not get_vocab(): building the dict costs ~25 ms at 50k
        return tok.token_to_id(t) is not None

    cfg = _read_config(src) if src.is_dir() else {}
    own = _token_str(cfg.get("eos_token"))
    eos = eos_token or own or (EOS if has(EOS) else None)
    if eos is None:
        raise TokenizeError(f"{tok_json}: no eos_token in its tokenizer_config.json and no {EOS} in its vocabulary; "
                            "set --set tokenize.eos_token=TOKEN to the token that ends a document")
    if not has(eos):
        raise TokenizeError(f"{tok_json}: eos token {eos!r} is not in its vocabulary; set tokenize.eos_token to one "
                            "that is")
    if src.is_dir() and (src / "tokenizer_config.json").is_file():
        def write(tmp: Path) -> None:
            for name in TOKENIZER_FILES:
                if (src / name).is_file():
                    shutil.copyfile(src / name, tmp / name)
            if own != eos:  # the folder's eos must be the one the shards end documents with
                _patch_config(tmp, eos_token=eos)
        _atomic_folder(folder, write)
    else:  # a bare tokenizer.json: wrap it into a folder with its eos (and pad / ChatML when it has them)
        pad = PAD if has(PAD) else None
        chat = CHATML_TEMPLATE if has(IM_START) and has(IM_END) else None
        save_folder(folder, tok, tokenizer_json=tok_json, eos_token=eos, pad_token=pad, chat_template=chat)
    return tok, eos


def load_tokenizer(folder: Path) -> "Tokenizer":
    return _load(Path(folder) / "tokenizer.json")


def _load(path: Path) -> "Tokenizer":
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise TokenizeError(f"{path}: not a tokenizers JSON file ({e})") from None


def _read_config(folder: Path) -> dict:
    p = folder / "tokenizer_config.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TokenizeError(f"{p}: not valid JSON ({e})") from None


def _token_str(t: object) -> str | None:
    # tokenizer_config.json keeps special tokens as strings or as AddedToken dicts.
    if isinstance(t, dict):
        t = t.get("content")
    return t if isinstance(t, str) and t else None


def _patch_config(folder: Path, **changes: object) -> None:
    p = folder / "tokenizer_config.json"
    cfg = _read_config(folder)
    cfg.update(changes)
    p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _atomic_folder(folder: Path, write) -> None:
    """Fill a hidden temporary folder with `write(tmp)`, then rename it to `folder` (see atomic_folder)."""
    with atomic_folder(folder) as tmp:
        write(tmp)
