"""Token shards on disk: the writer (append documents, close full shards, resume) and the ShardSet reader.

Layout (DESIGN.md "Token shards"): `{split}-NNNNN.bin` holds token ids back to back, raw little-endian
uint16 or uint32, no header; `{split}-NNNNN.idx` holds uint64 token offsets, one per document start
plus the end (N + 1 values, first 0, last = tokens in the .bin). Every document ends with eos.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gristmill.manifests import atomic_open, read_manifest, verified
from gristmill.tokenize import TokenizeError

SPLITS = ("train", "val")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def token_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32; `requested` forces one."""
    fits16 = vocab_size <= 2**16
    if requested == "uint16" and not fits16:
        raise TokenizeError(f"tokenize.dtype='uint16' cannot hold {vocab_size} token ids (at most 65,536); set "
                            "--set tokenize.dtype=auto")
    if requested == "uint32" or not fits16:
        return np.dtype("<u4")
    return np.dtype("<u2")


class ShardWriter:
    """Append tokenized documents of one split to its shards.

    The open shard grows in two hidden files, `.NAME.bin.partial` (tokens) and `.NAME.ends.partial`
    (uint64 document end offsets). A shard closes once it holds `shard_tokens` tokens or before the
    document that would overflow it (a document longer than a shard gets a shard of its own); closing
    writes NAME.idx atomically, then renames the .bin into place. `state()` after `sync()` is enough
    to reopen the writer at exactly that point after a crash.
    """

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int, state: dict | None = None):
        self.out_dir, self.split, self.dtype, self.shard_tokens = Path(out_dir), split, np.dtype(dtype), shard_tokens
        st = state or {"index": 0, "tokens": 0, "documents": 0}
        self.index, self.tokens, self.documents = int(st["index"]), int(st["tokens"]), int(st["documents"])
        self._recover()
        self._bin = open(self._partial("bin"), "ab")
        self._ends = open(self._partial("ends"), "ab")
        self._dirty = False  # written since the last sync

    # -- paths ---------------------------------------------------------------------------------
    def _final(self, ext: str, index: int | None = None) -> Path:
        return self.out_dir / f"{shard_name(self.split, self.index if index is None else index)}.{ext}"

    def _partial(self, ext: str, index: int | None = None) -> Path:
        return self.out_dir / f".{shard_name(self.split, self.index if index is None else index)}.{ext}.partial"

    def _recover(self) -> None:
        """Bring the files back to the recorded state: open shard truncated, later shards removed.

        A crash after the last sync may have closed the open shard (renamed its .bin, written its
        .idx) or started later ones; those hold more than the state says and are cut back here.
        """
        bin_p, ends_p = self._partial("bin"), self._partial("ends")
        if not bin_p.exists() and self._final("bin").exists():
            os.replace(self._final("bin"), bin_p)
        if not ends_p.exists() and self._final("idx").exists():
            ends = np.fromfile(self._final("idx"), dtype="<u8")[1:]
            ends_p.write_bytes(ends.tobytes())
        self._final("idx").unlink(missing_ok=True)
        for p in (bin_p, ends_p):
            if not p.exists():
                if self.tokens or self.documents:
                    raise TokenizeError(f"{p}: missing, but the resume state says it holds {self.documents} "
                                        "documents; run again with --force")
                p.touch()
        want = {bin_p: self.tokens * self.dtype.itemsize, ends_p: self.documents * 8}
        for p, size in want.items():
            if p.stat().st_size < size:
                raise TokenizeError(f"{p}: {p.stat().st_size} bytes, shorter than the {size} the resume state "
                                    "records; run again with --force")
            os.truncate(p, size)
        for p in self.out_dir.glob(f"{self.split}-*"):
            if _index_of(p.name) > self.index:
                p.unlink()
        for p in self.out_dir.glob(f".{self.split}-*.partial"):
            if _index_of(p.name.lstrip(".")) > self.index:
                p.unlink()

    # -- writing -------------------------------------------------------------------------------
    def add(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: `flat` (T,) token ids back to back, `lengths` (N,) tokens per document."""
        if flat.dtype != self.dtype:
            flat = flat.astype(self.dtype)
        ends = np.cumsum(lengths, dtype=np.int64)  # (N,) end of each document in `flat`
        n, first, pos = len(ends), 0, 0
        while first < n:
            room = self.shard_tokens - self.tokens
            k = int(np.searchsorted(ends[first:], pos + room, side="right"))  # documents that still fit
            if k == 0:
                if self.documents:
                    self._close()
                    continue
                k = 1
            stop = first + k
            end = int(ends[stop - 1])
            self._bin.write(memoryview(flat[pos:end]))
            self._ends.write(memoryview((ends[first:stop] - pos + self.tokens).astype("<u8")))
            self.tokens += end - pos
            self.documents += k
            self._dirty = True
            pos, first = end, stop
            if self.tokens >= self.shard_tokens:
                self._close()

    def _close(self) -> None:
        """Finish the open shard (.idx written atomically, .bin renamed) and open the next one."""
        self._bin.close()
        self._ends.close()
        bin_p, ends_p = self._partial("bin"), self._partial("ends")
        ends = np.fromfile(ends_p, dtype="<u8")
        with atomic_open(self._final("idx"), "wb") as f:
            f.write(np.concatenate([np.zeros(1, "<u8"), ends]).tobytes())
        with open(bin_p, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(bin_p, self._final("bin"))
        ends_p.unlink()
        self.index, self.tokens, self.documents = self.index + 1, 0, 0
        self._bin = open(self._partial("bin"), "ab")
        self._ends = open(self._partial("ends"), "ab")

    def sync(self) -> dict:
        """Make everything written so far durable; returns the state to resume from."""
        if self._dirty:  # fsync costs milliseconds; a split that got nothing new skips it
            for f in (self._bin, self._ends):
                f.flush()
                os.fsync(f.fileno())
            self._dirty = False
        return self.state()

    def state(self) -> dict:
        return {"index": self.index, "tokens": self.tokens, "documents": self.documents}

    def finish(self) -> int:
        """Close the last shard if it holds anything; returns the number of shards of this split."""
        if self.documents:
            self._close()
        self.release()
        self._partial("bin").unlink(missing_ok=True)
        self._partial("ends").unlink(missing_ok=True)
        return self.index

    def release(self) -> None:
        """Close the file handles (the partial files stay for a resume); safe to call twice."""
        self._bin.close()
        self._ends.close()


def _index_of(name: str) -> int:
    # "train-00012.bin" / "train-00012.bin.partial" -> 12
    try:
        return int(name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def shard_files(out_dir: Path, split: str) -> list[tuple[Path, Path]]:
    """The finished (.bin, .idx) pairs of a split in order."""
    bins = [p for p in Path(out_dir).glob(f"{split}-*.bin") if re.fullmatch(rf"{split}-\d{{5,}}\.bin", p.name)]
    return [(b, b.with_suffix(".idx")) for b in sorted(bins, key=lambda p: _index_of(p.name))]


def read_offsets(idx: Path) -> np.ndarray:
    return np.fromfile(idx, dtype="<u8")


# ----------------------------------------------------------------------------------------------
# reading


@dataclass
class ShardSet:
    """The shards of one split of a finished tokenize folder, memory-mapped read-only."""

    dir: Path
    split: str
    dtype: np.dtype
    vocab_size: int
    eos_id: int
    pad_id: int | None
    tokenizer_dir: Path
    names: list[str]
    shards: list[np.memmap]  # (tokens,) token ids per shard
    offsets: list[np.ndarray]  # (documents + 1,) uint64 per shard
    num_tokens: int = 0
    num_documents: int = 0
    _first_doc: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)

    @classmethod
    def open(cls, tokenize_dir: str | Path, split: str = "train", verify: bool = True) -> "ShardSet":
        """Open `split` of a tokenize folder. `verify` re-hashes every output first (a changed byte is refused);
        without it the sizes and offsets are still checked against the manifest."""
        d = Path(tokenize_dir)
        if split not in SPLITS:
            raise TokenizeError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        m = verified(d) if verify else read_manifest(d)
        if m.stage != "tokenize":
            raise TokenizeError(f"{d}: a {m.stage!r} stage folder; expected the output of `gristmill tokenize`")
        metrics = m.metrics
        dtype = np.dtype(metrics["dtype"]).newbyteorder("<")
        outputs = {o.path: o for o in m.outputs}
        bins = sorted(o.path for o in m.outputs_of("tokens") if o.path.startswith(f"{split}-"))
        if not bins:
            raise TokenizeError(f"{d}/manifest.json lists no {split} shards")
        shards, offsets = [], []
        for name in bins:
            bin_p, idx_name = d / name, name[:-len(".bin")] + ".idx"
            if idx_name not in outputs:
                raise TokenizeError(f"{d}/manifest.json lists {name} but not its index {idx_name}")
            size = bin_p.stat().st_size
            if size % dtype.itemsize:
                raise TokenizeError(f"{bin_p}: {size} bytes is not a whole number of {dtype.name} tokens")
            n_tok = size // dtype.itemsize
            off = read_offsets(d / idx_name)
            n_docs = outputs[name].records
            if (len(off) < 2 or off[0] != 0 or int(off[-1]) != n_tok or (n_docs is not None and len(off) != n_docs + 1)
                    or np.any(off[1:] < off[:-1])):
                raise TokenizeError(f"{d / idx_name}: offsets do not match {name} ({len(off)} offsets, last "
                                    f"{int(off[-1]) if len(off) else None}, shard has {n_tok} tokens and "
                                    f"{n_docs} documents); run `gristmill tokenize --force` to rebuild it")
            shards.append(np.memmap(bin_p, dtype=dtype, mode="r"))
            offsets.append(off)
        counts = np.array([len(o) - 1 for o in offsets], dtype=np.int64)
        return cls(dir=d, split=split, dtype=dtype, vocab_size=int(metrics["vocab_size"]),
                   eos_id=int(metrics["eos_id"]), pad_id=metrics.get("pad_id"), tokenizer_dir=d / "tokenizer",
                   names=bins, shards=shards, offsets=offsets, num_tokens=int(sum(len(s) for s in shards)),
                   num_documents=int(counts.sum()), _first_doc=np.concatenate([[0], np.cumsum(counts)]))

    def __len__(self) -> int:
        return self.num_documents

    def locate(self, i: int) -> tuple[int, int]:
        """Global document index -> (shard, document within shard)."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range (0..{self.num_documents - 1})")
        s = int(np.searchsorted(self._first_doc, i, side="right")) - 1
        return s, i - int(self._first_doc[s])

    def document(self, i: int) -> np.ndarray:
        """Token ids of document `i` (global index), trailing eos included; a view into the memmap."""
        s, j = self.locate(i)
        off = self.offsets[s]
        return self.shards[s][int(off[j]):int(off[j + 1])]
