"""Decontamination: documents sharing a long word n-gram with an evaluation set are dropped or flagged.

The evaluation sets are the curate stage's "decontaminate" inputs (`--decontaminate FILE...`, or
`decontaminate = [...]` in a recipe's [inputs]), so the manifest records each file's sha256 and a
changed set changes the stage id. Formats, by name:

- .jsonl / .ndjson (.gz / .zst): one JSON record per line; .json (.gz): one JSON value (a list of
  records, or a record); .parquet: one record per row. Every string value is a text of its own
  (n-grams never span two fields), nested ones included (messages[].content, choices[]...);
  `decontamination.fields` narrows it to the strings under those keys, at any depth.
- anything else (.txt, .md, .gz / .zst of them): plain text, one text per blank-line-separated
  paragraph (the lines of a paragraph are joined, so wrapped text keeps its n-grams).

Words are those of `minhash.normalize_text` (NFKC, lowercase, runs of letters and marks; digits and
punctuation separate words), the same as near dedup uses, hashed by `minhash.ngram_hashes`. A text with
fewer than `ngram` words has no n-gram and can match nothing; the manifest counts such texts per set.

The index is built once per run (`build_index`, in the stage's main process, before any task):
every n-gram hash of every set, sorted and unique (uint64, 8 bytes each), and the set of its first
occurrence. Each task memory-maps it (`Decontaminator`) and looks a batch of documents' n-grams up with
one `searchsorted`. A false match needs a 64-bit hash collision: ~ n-grams in the document x n-grams
in the sets / 2^64, about 1e-10 for a 10k-word page against a 1M-n-gram benchmark.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from gristmill.curate import CurateError
from gristmill.curate.config import DecontaminationConfig
from gristmill.curate.minhash import ngram_hashes, normalize_text

REASON = "decontaminated"
STAGE = "decontaminate"
_BATCH_CHARS = 1 << 20  # characters hashed at once (the per-character arrays are ~40 bytes per character)


def _open(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _strings(value: Any, fields: set[str], take: bool) -> Iterator[str]:
    """String values of a JSON value; with `fields`, only those under one of those keys (at any depth)."""
    if isinstance(value, str):
        if take:
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, fields, take or k in fields)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, fields, take)


def eval_texts(path: Path, fields: Sequence[str] = ()) -> Iterator[str]:
    """The texts of one evaluation file (see the module docstring for formats)."""
    path = Path(path)
    name = path.name.lower()
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    wanted, take = set(fields), not fields
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(str(path))
        for i in range(pf.num_row_groups):
            for row in pf.read_row_group(i).to_pylist():
                yield from _strings(row, wanted, take)
        return
    with _open(path) as f:
        if name.endswith((".jsonl", ".ndjson")):
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise CurateError(f"evaluation set {path}:{line_no}: not JSON ({e}); fix or remove the line") from None
                yield from _strings(rec, wanted, take)
        elif name.endswith(".json"):
            try:
                rec = json.loads(f.read())
            except ValueError as e:
                raise CurateError(f"evaluation set {path}: not JSON ({e})") from None
            yield from _strings(rec, wanted, take)
        else:  # plain text: blank-line-separated paragraphs
            para: list[str] = []
            for line in io.TextIOWrapper(f, encoding="utf-8", errors="replace"):
                if line.strip():
                    para.append(line.strip())
                elif para:
                    yield " ".join(para)
                    para = []
            if para:
                yield " ".join(para)


def _char_batches(texts: Iterator[str] | Sequence[str]) -> Iterator[list[str]]:
    batch, chars = [], 0
    for t in texts:
        batch.append(t)
        chars += len(t)
        if chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def set_names(paths: Sequence[Path]) -> list[str]:
    """Short, distinct names: the file name, with as many parent folders as it takes to tell two apart
    (the demo's three val.jsonl files become sft/val.jsonl, preference/val.jsonl, prompts/val.jsonl)."""
    parts = [Path(p).resolve().parts for p in paths]
    k = 1
    while True:
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names) or k >= max(len(p) for p in parts):
            return names
        k += 1


def build_index(paths: Sequence[Path], cfg: DecontaminationConfig, out_dir: Path) -> list[dict]:
    """Hash every n-gram of every set into `out_dir` (ngrams.npy sorted uint64, sets.npy the index of
    the first set holding each, index.json the names and n); returns a summary per set."""
    n = cfg.ngram
    names = set_names(paths)
    hashes, owners, summary = [], [], []
    for i, (path, name) in enumerate(zip(paths, names)):
        path = Path(path)
        if not path.is_file():
            raise CurateError(f"input 'decontaminate': {path} is not a file (give the evaluation files themselves)")
        texts = short = 0
        mine = []
        for batch in _char_batches(eval_texts(path, cfg.fields)):
            h, _, counts = ngram_hashes(batch, n)
            texts += len(batch)
            short += int((counts < n).sum())
            mine.append(h)
        h = np.unique(np.concatenate(mine)) if mine else np.zeros(0, np.uint64)
        hashes.append(h)
        owners.append(np.full(h.size, i, np.uint32))
        summary.append({"set": name, "path": str(path), "texts": texts, "texts_shorter_than_ngram": short,
                        "ngrams": int(h.size)})
    allh = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    owner = np.concatenate(owners) if owners else np.zeros(0, np.uint32)
    order = np.argsort(allh, kind="stable")  # stable: a shared n-gram is reported for the first set named
    allh, owner = allh[order], owner[order]
    first = np.concatenate(([True], allh[1:] != allh[:-1])) if allh.size else np.zeros(0, bool)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "ngrams.npy", allh[first])
    np.save(out_dir / "sets.npy", owner[first])
    (out_dir / "index.json").write_text(json.dumps({"ngram": n, "sets": names}))
    return summary


class Decontaminator:
    """The run's index, memory-mapped; `find(texts)` -> per text None or (set name, the shared n-gram)."""

    def __init__(self, index_dir: str | Path):
        d = Path(index_dir)
        meta = json.loads((d / "index.json").read_text())
        self.n, self.names = int(meta["ngram"]), list(meta["sets"])
        self.ngrams = np.load(d / "ngrams.npy", mmap_mode="r")
        self.sets = np.load(d / "sets.npy", mmap_mode="r")

    def find(self, texts: Sequence[str]) -> list[tuple[str, str] | None]:
        out: list[tuple[str, str] | None] = [None] * len(texts)
        if not self.ngrams.size:
            return out
        start = 0
        for batch in _char_batches(texts):
            h, off, _ = ngram_hashes(batch, self.n)
            if h.size:
                pos = np.minimum(np.searchsorted(self.ngrams, h), self.ngrams.size - 1)
                ks = np.flatnonzero(np.asarray(self.ngrams[pos]) == h)
                docs, first = np.unique(np.searchsorted(off, ks, side="right") - 1, return_index=True)
                for d, k in zip(docs.tolist(), ks[first].tolist()):  # each document's first shared n-gram
                    words = normalize_text(batch[d]).split()
                    w = k - int(off[d])
                    out[start + d] = (self.names[int(self.sets[pos[k]])], " ".join(words[w:w + self.n]))
            start += len(batch)
        return out


def match_detail(match: tuple[str, str]) -> str:
    """The ledger's detail for a contaminated document: "<set>: <n-gram>"."""
    return f"{match[0]}: {match[1]}"
