"""TokenizeConfig: the [tokenize] section of a recipe (tokenizer training, split, shard layout)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Byte-level BPE starts from the 256 byte symbols; the four special tokens come on top.
N_SPECIAL = 4
MIN_VOCAB = 256 + N_SPECIAL


@dataclass(kw_only=True)
class TokenizeConfig:
    #: BPE vocabulary size including the 256 bytes and the special tokens (ignored with --tokenizer).
    #: The default suits the demo corpus; 32k-50k for real runs.
    vocab_size: int = 2048
    #: a pair must occur this often in the training sample to become a merge
    min_frequency: int = 2
    #: pre-split numbers into single digits before BPE (as Llama does) so numbers tokenize uniformly
    split_digits: bool = False
    #: fraction of the train-split documents (chosen by a hash of the id) the tokenizer is trained on
    train_fraction: float = 1.0
    #: stop feeding the tokenizer trainer after this many characters of sampled text
    train_max_chars: int = 200_000_000
    #: end-of-document token appended to every document; None = "<|endoftext|>" for a trained
    #: tokenizer, the given tokenizer's own eos_token otherwise
    eos_token: str | None = None
    #: fraction of documents (by a hash of the id) that go to the validation split; at least one always does
    val_fraction: float = 0.005
    #: changes which documents the id hash sends to val and to the tokenizer sample
    split_seed: int = 0
    #: tokens per output shard; a shard closes before the document that would overflow it
    shard_tokens: int = 50_000_000
    #: documents per encode_batch call (tokenizers spreads one call over all cores)
    batch_size: int = 1024
    #: token dtype on disk: "auto" = uint16 when the vocabulary fits 65,536 ids, else uint32
    dtype: Literal["auto", "uint16", "uint32"] = "auto"
    #: encoding tasks run at the same time on this machine (processes of datatrove's local executor);
    #: 1 = encode in this process. More tasks give more (each task's last shard is short), never other tokens
    workers: int = 1
    #: encoding tasks, each a contiguous run of curate's document shards (at most one task per shard);
    #: 0 = one per worker (local) or one per document shard (ray)
    tasks: int = 0
    #: where the encoding tasks run: "local" (this machine, `workers` at a time) or "ray" (datatrove's
    #: RayPipelineExecutor on the cluster `ray.init()` finds; the output folder must be on storage every node sees)
    executor: Literal["local", "ray"] = "local"
    #: Rayon encoding threads per task (and the CPUs a Ray task reserves); 0 = cores // workers locally, 1 on Ray
    cpus_per_task: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < MIN_VOCAB:
            raise ValueError(f"tokenize.vocab_size={self.vocab_size} is below 256 bytes + {N_SPECIAL} special tokens; "
                             f"set --set tokenize.vocab_size=512 or more")
        if self.vocab_size > 2**32:
            raise ValueError(f"tokenize.vocab_size={self.vocab_size} does not fit uint32 token ids; use at most 2**32")
        if self.min_frequency < 1:
            raise ValueError(f"tokenize.min_frequency={self.min_frequency} must be at least 1")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"tokenize.train_fraction={self.train_fraction} must be in (0, 1]; 1.0 trains on every "
                             "train document")
        if self.train_max_chars < 1:
            raise ValueError(f"tokenize.train_max_chars={self.train_max_chars} must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"tokenize.val_fraction={self.val_fraction} must be in [0, 1), e.g. 0.005")
        if self.shard_tokens < 1:
            raise ValueError(f"tokenize.shard_tokens={self.shard_tokens} must be positive, e.g. 50000000")
        if self.batch_size < 1:
            raise ValueError(f"tokenize.batch_size={self.batch_size} must be positive, e.g. 1024")
        if self.workers < 1:
            raise ValueError(f"tokenize.workers={self.workers} must be >= 1; e.g. --set tokenize.workers=2")
        if self.tasks < 0:
            raise ValueError(f"tokenize.tasks={self.tasks} must be >= 0 (0 = one per worker)")
        if self.cpus_per_task < 0:
            raise ValueError(f"tokenize.cpus_per_task={self.cpus_per_task} must be >= 0 (0 = cores // workers)")
        if self.eos_token is not None and not self.eos_token:
            raise ValueError("tokenize.eos_token is empty; leave it unset for the default <|endoftext|>")
