"""The ledger: one row per input record (kept, or dropped where and why), its funnel and its accounting.

Written as Parquet (or jsonl.gz); the check `records read = kept + sum(dropped)` runs on every run.
"""
from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from gristmill.curate import CurateError

# The funnel order. "pending" rows (survived every per-task step) get their final step in finalize.
STEPS = ("read", "url_filter", "prefilter", "extract", "langid", "gopher_repetition", "gopher_quality", "c4",
         "c4_badwords", "fineweb", "decontaminate", "perplexity", "quality", "exact_dedup", "near_dedup")

# (column, Arrow type). pyarrow is imported only where Parquet is written or read, so the task
# processes (which write JSON lines) stay ~50 MB smaller.
FIELDS = [
    ("id", "string"),  # WARC-Record-ID, the JSONL id, or <file>:<line>
    ("source", "string"),  # input file
    ("offset", "int64"),  # byte offset (WARC) / line (JSONL, from 1) / row (Parquet) / 0 (.html file)
    ("offset_kind", "string"),
    ("url", "string"),
    ("record_type", "string"),  # WARC-Type or jsonl / parquet / html / broken / file
    ("kept", "bool"),
    ("stage", "string"),  # the step that dropped it (null when kept)
    ("reason", "string"),  # why (null when kept)
    ("detail", "string"),  # e.g. an exception text, an HTTP status, a MIME type, "<eval set>: <shared n-gram>"
    ("language", "string"),
    ("language_score", "float32"),
    ("perplexity", "float64"),
    ("quality", "float32"),
    ("duplicate_of", "string"),  # id of the kept document (exact and near duplicates)
    ("cluster", "string"),  # near-duplicate cluster: id of its kept document (members and the kept one)
    ("similarity", "float32"),  # near duplicates: Jaccard with duplicate_of (dedup.verify's measure)
    ("bytes_raw", "int64"),  # payload bytes as read
    ("bytes_text", "int64"),  # UTF-8 bytes of the extracted text (0 before extraction)
    ("bytes_clean", "int64"),  # UTF-8 bytes after the heuristic filters (C4 removes lines)
]
# Only in the per-task files (finalize needs them; the published ledger locates a record by source +
# offset, which does not depend on how the input was cut into tasks).
TASK_FIELDS = FIELDS + [("task", "int32"), ("seq", "int64"), ("exact_key", "string")]
COLUMNS = [n for n, _ in FIELDS]
TASK_COLUMNS = [n for n, _ in TASK_FIELDS]


def arrow_schema(fields: list[tuple[str, str]] = FIELDS):
    import pyarrow as pa

    return pa.schema([(n, pa.type_for_alias(t)) for n, t in fields])


def empty_row() -> dict[str, Any]:
    return {name: None for name in TASK_COLUMNS}


class LedgerWriter:
    """Streams rows to Parquet in row groups (memory stays flat), or to JSON lines (.jsonl.gz, or plain
    .jsonl for the per-task files); close() to finish. Rows are dicts; keys outside `fields` are ignored."""

    def __init__(self, path: str | Path, *, fmt: str = "parquet", fields: list[tuple[str, str]] = FIELDS,
                 rows_per_group: int = 10_000):
        self.path = Path(path)
        self.fmt = fmt
        self.names = [n for n, _ in fields]
        self.rows_per_group = rows_per_group
        self._buf: list[dict] = []
        self.rows = 0
        self._raw = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.schema = arrow_schema(fields)
            self._writer = pq.ParquetWriter(str(self.path), self.schema, compression="zstd")
        elif fmt == "jsonl.gz":
            self._raw = open(self.path, "wb")
            self._writer = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)
        elif fmt == "jsonl":
            self._writer = open(self.path, "wb")
        else:
            raise CurateError(f"ledger format {fmt!r}: use parquet or jsonl.gz")

    def write(self, row: dict) -> None:
        self._buf.append(row)
        self.rows += 1
        if len(self._buf) >= self.rows_per_group:
            self._flush()

    def write_many(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.write(r)

    def _flush(self) -> None:
        if not self._buf:
            return
        if self.fmt == "parquet":
            import pyarrow as pa

            cols = {n: [r.get(n) for r in self._buf] for n in self.names}
            self._writer.write_table(pa.table(cols, schema=self.schema))
        else:
            import orjson

            for r in self._buf:
                self._writer.write(orjson.dumps({n: _json_safe(r.get(n)) for n in self.names}) + b"\n")
        self._buf.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> "LedgerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.hex()
    return v


def iter_ledger(path: str | Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of a ledger file (Parquet, .jsonl.gz or .jsonl), in order, a row group at a time."""
    path = Path(path)
    if path.name.endswith((".jsonl.gz", ".jsonl")):
        import orjson

        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line in f:
                row = orjson.loads(line)
                yield {c: row.get(c) for c in columns} if columns else row
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    for i in range(pf.num_row_groups):
        yield from pf.read_row_group(i, columns=columns).to_pylist()


def read_ledger(path: str | Path, columns: list[str] | None = None):
    """The ledger as a pyarrow Table (either format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.name.endswith((".jsonl.gz", ".jsonl")):
        names = columns or COLUMNS
        rows = list(iter_ledger(path, names))
        types = dict(TASK_FIELDS)
        return pa.table({n: [r.get(n) for r in rows] for n in names}, schema=arrow_schema([(n, types[n]) for n in names]))
    return pq.read_table(str(path), columns=columns)


class Tally:
    """The accounting and the funnel of ledger rows, accumulated as the rows go by (finalize streams the
    ledger through one): a few counters per (kept, stage) and per reason, nothing per row. `accounting()` and
    `funnel(steps)` give exactly what the functions of the same names give for the same rows."""

    def __init__(self) -> None:
        self.read = self.kept = 0
        self.raw_total = 0
        self.dropped: Counter = Counter()  # reason -> rows
        self.by_stage: Counter = Counter()  # stage -> dropped rows
        self.flagged: Counter = Counter()  # reason -> kept rows that carry one
        # (kept, stage) -> [rows, bytes_raw, bytes_text, bytes_clean]: enough for the funnel, whose steps are
        # only known when it is asked for (a row's last step is a function of kept and stage)
        self.groups: dict[tuple[bool, str | None], list[int]] = {}

    def add(self, r: dict) -> None:
        self.read += 1
        raw = r["bytes_raw"] or 0
        self.raw_total += raw
        kept = bool(r["kept"])
        if kept:
            self.kept += 1
            if r.get("reason"):
                self.flagged[r["reason"]] += 1
        else:
            self.dropped[r["reason"]] += 1
            self.by_stage[r["stage"]] += 1
        g = self.groups.get((kept, None if kept else r["stage"]))
        if g is None:
            g = self.groups[(kept, None if kept else r["stage"])] = [0, 0, 0, 0]
        g[0] += 1
        g[1] += raw
        g[2] += r["bytes_text"] or 0
        g[3] += r["bytes_clean"] or 0

    def add_many(self, rows: Iterable[dict]) -> "Tally":
        for r in rows:
            self.add(r)
        return self

    def accounting(self) -> dict[str, Any]:
        return {"records_read": self.read, "kept": self.kept, "dropped": dict(sorted(self.dropped.items())),
                "dropped_by_stage": {s: self.by_stage[s] for s in STEPS if self.by_stage[s]},
                "flagged": dict(sorted(self.flagged.items()))}

    def funnel(self, steps: Iterable[str] = STEPS) -> list[dict[str, Any]]:
        """Documents and bytes after each step (the step order of `steps`).

        A row's size at a step: raw payload bytes before extraction, extracted text bytes from there on,
        cleaned bytes from the C4 step on (it removes lines).
        """
        steps = list(steps)
        index = {s: i for i, s in enumerate(steps)}
        n = len(steps)
        docs = [0] * n
        size = [0] * n
        extract_i = index.get("extract", 0)
        clean_i = index.get("c4", extract_i)  # only C4 changes the text (it removes lines)
        for (kept, stage), (rows, raw, text, clean) in self.groups.items():
            last = n if kept else index.get(stage, 0)  # steps passed: [0, last)
            for i in range(last):
                docs[i] += rows
                size[i] += raw if i < extract_i else text if i < clean_i else clean
        out = [{"step": "input", "documents": self.read, "bytes": self.raw_total}]
        prev_docs, prev_bytes = self.read, self.raw_total
        for i, s in enumerate(steps):
            out.append({"step": s, "documents": docs[i], "bytes": size[i], "documents_in": prev_docs,
                        "bytes_in": prev_bytes, "dropped": prev_docs - docs[i]})
            prev_docs, prev_bytes = docs[i], size[i]
        return out


def accounting(rows: Iterable[dict]) -> dict[str, Any]:
    """records_read, kept, dropped {reason: count}, dropped_by_stage {stage: count} and flagged {reason: count}
    (kept rows that carry a reason: decontamination.action = "flag") of ledger rows."""
    return Tally().add_many(rows).accounting()


def check_accounting(acc: dict[str, Any], *, records_read: int, documents_written: int, where: str) -> None:
    """The invariant: every record read is kept or dropped exactly once, and kept = documents written."""
    dropped = sum(acc["dropped"].values())
    problems = []
    if acc["records_read"] != records_read:
        problems.append(f"the ledger has {acc['records_read']} rows but the readers read {records_read} records")
    if acc["kept"] + dropped != acc["records_read"]:
        problems.append(f"kept {acc['kept']} + dropped {dropped} != records read {acc['records_read']}")
    if acc["kept"] != documents_written:
        problems.append(f"the ledger keeps {acc['kept']} documents but {documents_written} were written")
    if problems:
        raise CurateError(f"{where}: ledger accounting failed: " + "; ".join(problems) +
                          " (a bug in curate: please report it with this folder)")


def funnel(rows: Iterable[dict], steps: Iterable[str] = STEPS) -> list[dict[str, Any]]:
    """Documents and bytes after each step, from ledger rows (the step order of `steps`); see Tally.funnel."""
    return Tally().add_many(rows).funnel(steps)
