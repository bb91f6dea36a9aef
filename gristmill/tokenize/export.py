"""`gristmill tokenize export --format megatron DIR OUT`: token shards -> Megatron-LM indexed datasets.

Megatron-LM's `MMIDIDX` layout (megatron/core/datasets/indexed_dataset.py), one sequence per document:
  PREFIX.bin  token ids back to back (our .bin files concatenated)
  PREFIX.idx  b"MMIDIDX\\x00\\x00", <Q version 1, <B dtype code, <Q sequence count, <Q document count,
              int32 sequence lengths, int64 sequence byte offsets into .bin, int64 document indices
              (0, 1, ..., N: sequence i is document i)
"""
from __future__ import annotations

import argparse
import shutil
import struct
from pathlib import Path

import numpy as np

from gristmill.manifests import atomic_open, verified
from gristmill.tokenize import TokenizeError
from gristmill.tokenize.shards import SPLITS, ShardSet

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron's DType enum; it has no uint32, and its own builder stores large vocabularies as int32.
DTYPE_CODES = {np.dtype("uint8"): 1, np.dtype("int8"): 2, np.dtype("int16"): 3, np.dtype("int32"): 4,
               np.dtype("int64"): 5, np.dtype("float64"): 6, np.dtype("float32"): 7, np.dtype("uint16"): 8}
COPY_CHUNK = 1 << 24  # tokens per write when copying a shard (32-64 MiB)


def megatron_dtype(dtype: np.dtype, vocab_size: int) -> np.dtype:
    """uint16 stays uint16; uint32 ids are stored as int32 (same bytes while ids < 2**31)."""
    if np.dtype(dtype) == np.uint16:
        return np.dtype("<u2")
    if vocab_size > 2**31:
        raise TokenizeError(f"vocabulary of {vocab_size} ids does not fit Megatron's int32 token type")
    return np.dtype("<i4")


def export_megatron(tokenize_dir: Path, prefix: Path, split: str = "train", *, verify: bool = True) -> dict:
    """Write PREFIX.bin and PREFIX.idx for one split; returns counts. Streams shard by shard."""
    ss = ShardSet.open(tokenize_dir, split, verify=verify)
    dtype = megatron_dtype(ss.dtype, ss.vocab_size)
    prefix = Path(prefix)
    with atomic_open(prefix.with_name(prefix.name + ".bin"), "wb") as f:
        for shard in ss.shards:
            for a in range(0, len(shard), COPY_CHUNK):
                f.write(np.ascontiguousarray(shard[a:a + COPY_CHUNK]).astype(dtype, copy=False).tobytes())
    n = ss.num_documents
    with atomic_open(prefix.with_name(prefix.name + ".idx"), "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", DTYPE_CODES[np.dtype(dtype.name)]))
        f.write(struct.pack("<Q", n))  # sequences
        f.write(struct.pack("<Q", n + 1))  # document index entries
        for off in ss.offsets:
            f.write(np.diff(off).astype("<i4").tobytes())  # (N_shard,) sequence lengths in tokens
        base = 0  # byte offset of the current shard's first token in PREFIX.bin
        for off, shard in zip(ss.offsets, ss.shards):
            f.write((off[:-1].astype(np.int64) * dtype.itemsize + base).astype("<i8").tobytes())
            base += len(shard) * dtype.itemsize
        for a in range(0, n + 1, COPY_CHUNK):
            f.write(np.arange(a, min(a + COPY_CHUNK, n + 1), dtype="<i8").tobytes())
    return {"split": split, "sequences": n, "tokens": ss.num_tokens, "dtype": dtype.name, "prefix": str(prefix)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="gristmill tokenize export",
                                 description="Write a tokenize folder's shards in another trainer's format.")
    ap.add_argument("--format", choices=["megatron"], default="megatron",
                    help="megatron: Megatron-LM / NeMo indexed dataset (.bin + .idx, MMIDIDX)")
    ap.add_argument("dir", type=Path, help="a finished tokenize folder")
    ap.add_argument("out", type=Path, help="output folder: OUT/<split>.bin, OUT/<split>.idx and OUT/tokenizer/")
    ap.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    ap.add_argument("--no-verify", action="store_true", help="skip re-hashing the shards before export")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = SPLITS if args.split == "all" else (args.split,)
    if not args.no_verify:
        verified(args.dir)  # once for all splits; a changed shard is refused before anything is written
    for split in splits:
        info = export_megatron(args.dir, args.out / split, split, verify=False)
        print(f"{split}: {info['sequences']} documents, {info['tokens']} tokens ({info['dtype']}) -> {info['prefix']}")
    if (args.out / "tokenizer").exists():
        shutil.rmtree(args.out / "tokenizer")
    shutil.copytree(args.dir / "tokenizer", args.out / "tokenizer")
    print(f"Megatron-LM: --data-path {args.out / 'train'} (or --train-data-path {args.out / 'train'} "
          f"--valid-data-path {args.out / 'val'}) --tokenizer-type HuggingFaceTokenizer "
          f"--tokenizer-model {args.out / 'tokenizer'}")
    return 0
