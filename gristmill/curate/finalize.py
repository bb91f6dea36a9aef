"""The global step after all tasks: corpus-wide verdicts in funnel order (perplexity percentiles,
quality-score percentile, exact dedup, near dedup), then the document shards, the ledger, stats, report
and the manifest, streamed task by task in input order (deterministic).

Memory: besides one task's rows at a time, only per-pending-document arrays are held (the "dedup
index": verdict codes, perplexity, quality, a 32-byte exact key and the MinHash signature).
"""
from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.curate import CurateError
from gristmill.curate.ledger import LedgerWriter, accounting, check_accounting, funnel, iter_ledger, STEPS
from gristmill.curate.pipeline import config_from_dict, document_record, task_dir

KEEP = 0  # verdict codes per pending document; other codes index Decisions.reasons


@dataclass
class Decisions:
    """Per pending document (global order = task order, then record order)."""

    code: np.ndarray  # int32: 0 = kept so far, else index into `reasons`
    duplicate_of: np.ndarray  # int64 global index of the kept document, -1 = none
    cluster: np.ndarray  # int64 global index of the cluster's kept document, -1 = none
    similarity: np.ndarray  # float32 Jaccard of a near duplicate with its kept document, NaN = none
    offsets: np.ndarray  # int64 (n_tasks + 1): first global index of each task
    reasons: list[tuple[str, str]] = field(default_factory=lambda: [("", "")])  # (stage, reason) per code
    bounds: dict[str, Any] = field(default_factory=dict)
    index_bytes: int = 0  # bytes held for the global decisions (the "dedup index")

    def drop(self, idx: np.ndarray | list[int], stage: str, reason: str) -> None:
        key = (stage, reason)
        if key not in self.reasons:
            self.reasons.append(key)
        self.code[np.asarray(idx, dtype=np.int64)] = self.reasons.index(key)


def _tasks(plan: dict) -> list[dict]:
    infos = []
    for rank in range(plan["n_tasks"]):
        d = task_dir(plan["work_dir"], rank)
        p = d / "task.json"
        if not p.is_file():
            raise CurateError(f"task {rank} has no finished output in {d}; rerun the stage to complete it")
        infos.append(json.loads(p.read_text()))
    return infos


def _pending_ids(plan: dict, infos: list[dict]) -> list[str]:
    ids: list[str] = []
    for info in infos:
        for row in iter_ledger(task_dir(plan["work_dir"], info["rank"]) / "ledger.jsonl", ["id", "stage"]):
            if row["stage"] == "pending":
                ids.append(row["id"])
    return ids


def _pending_columns(plan: dict, infos: list[dict]) -> dict[str, Any]:
    """ids, perplexity, quality and exact keys of every pending document, in global order."""
    ids: list[str] = []
    ppl: list[float] = []
    qual: list[float] = []
    keys: list[str | None] = []
    for info in infos:
        cols = ["id", "stage", "perplexity", "quality", "exact_key"]
        for row in iter_ledger(task_dir(plan["work_dir"], info["rank"]) / "ledger.jsonl", cols):
            if row["stage"] != "pending":
                continue
            ids.append(row["id"])
            ppl.append(np.nan if row["perplexity"] is None else row["perplexity"])
            qual.append(np.nan if row["quality"] is None else row["quality"])
            keys.append(row["exact_key"])
    return {"ids": ids, "perplexity": np.asarray(ppl, dtype=np.float64),
            "quality": np.asarray(qual, dtype=np.float32), "keys": keys}


def decide_before_near(plan: dict) -> Decisions:
    """Perplexity, quality and exact-dedup verdicts over the whole corpus, in that order."""
    cfg = config_from_dict(plan["config"])
    infos = _tasks(plan)
    counts = [i["pending"] for i in infos]
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    n = int(offsets[-1])
    cols = _pending_columns(plan, infos)
    if len(cols["ids"]) != n:
        raise CurateError(f"{plan['work_dir']}: task files disagree on the pending documents "
                          f"({len(cols['ids'])} ledger rows, {n} documents); rerun with --force")
    dec = Decisions(code=np.zeros(n, np.int32), duplicate_of=np.full(n, -1, np.int64),
                    cluster=np.full(n, -1, np.int64), similarity=np.full(n, np.nan, np.float32), offsets=offsets)
    models = plan["models"]
    if models.get("reference") and n:
        from gristmill.curate.perplexity import percentile_bounds, perplexity_verdict

        p = cfg.perplexity
        ppl = cols["perplexity"]
        if p.mode == "percentile":
            finite = ppl[np.isfinite(ppl)]
            low, high = percentile_bounds(finite, p.low_percentile, p.high_percentile) if finite.size else (None, None)
        else:
            low, high = p.min_perplexity, p.max_perplexity
        dec.bounds["perplexity"] = {"mode": p.mode, "low": low, "high": high}
        for i in np.flatnonzero(dec.code == KEEP).tolist():
            keep, reason = perplexity_verdict(float(ppl[i]), low, high)
            if not keep:
                dec.drop([i], "perplexity", reason)
    if models.get("quality") and n:
        from gristmill.curate.quality import quality_verdict
        from gristmill.curate.score import percentile_cutoff

        # the cut is a percentile of the scores of the documents still in the running (after perplexity)
        alive = np.flatnonzero(dec.code == KEEP)
        q = cols["quality"]
        cutoff = percentile_cutoff(q[alive], cfg.quality.keep_percent)
        dec.bounds["quality"] = {"keep_percent": cfg.quality.keep_percent,
                                 "threshold": cutoff if np.isfinite(cutoff) else None}
        for i in alive.tolist():
            keep, reason = quality_verdict(float(q[i]), cutoff)
            if not keep:
                dec.drop([i], "quality", reason or "quality_low")
    if cfg.dedup.exact:
        first: dict[str, int] = {}
        keys = cols["keys"]
        for i in np.flatnonzero(dec.code == KEEP).tolist():
            k = keys[i]
            if k is None:
                continue
            j = first.setdefault(k, i)
            if j != i:
                dec.drop([i], "exact_dedup", "exact_duplicate")
                dec.duplicate_of[i] = j
    # arrays + the exact keys and ids as Python objects (+ the first-seen dict's slots)
    dec.index_bytes = int(dec.code.nbytes + dec.duplicate_of.nbytes + dec.cluster.nbytes + dec.similarity.nbytes
                          + cols["perplexity"].nbytes
                          + cols["quality"].nbytes + sum(sys.getsizeof(k) for k in cols["keys"] if k is not None)
                          + sum(sys.getsizeof(i) for i in cols["ids"]) + 16 * n)
    return dec


def _signatures(plan: dict, info: dict, mmap: bool = False) -> np.ndarray:
    """(pending, num_perm) signatures of one task; mmap: read rows from disk as they are indexed."""
    path = task_dir(plan["work_dir"], info["rank"]) / "signatures.bin"
    if not info["pending"] or info["signature_dtype"] is None:
        return np.zeros((info["pending"], 0), np.uint32)
    shape, dtype = (info["pending"], info["num_perm"]), np.dtype(info["signature_dtype"])
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)
    return np.fromfile(path, dtype=dtype).reshape(shape)


def decide_near_memory(plan: dict, dec: Decisions) -> None:
    """Near dedup on one machine: MinHash LSH, each candidate pair confirmed (dedup.verify), union-find over
    the survivors (first seen is kept)."""
    from gristmill.curate.dedup import estimated_jaccard, near_duplicate_clusters

    cfg = config_from_dict(plan["config"])
    infos = _tasks(plan)
    alive = np.flatnonzero(dec.code == KEEP)
    if alive.size == 0:
        return
    parts = []
    for info in infos:
        lo, hi = dec.offsets[info["rank"]], dec.offsets[info["rank"] + 1]
        local = alive[(alive >= lo) & (alive < hi)] - lo
        if local.size:
            parts.append(_signatures(plan, info)[local])
    sigs = np.concatenate(parts)  # (M, num_perm), M = survivors
    dec.index_bytes += sigs.nbytes
    d = cfg.dedup
    if d.verify == "exact":
        exact = ExactShingles(plan, dec.offsets, d.ngram)
        similarity = lambda pairs: exact.jaccard(alive[pairs[:, 0]], alive[pairs[:, 1]])  # noqa: E731
    else:
        similarity = lambda pairs: estimated_jaccard(sigs[pairs[:, 0]], sigs[pairs[:, 1]])  # noqa: E731
    roots = np.asarray(near_duplicate_clusters(sigs, bands=d.bands, rows=d.rows,
                                               threshold=None if d.verify == "none" else d.threshold,
                                               similarity=similarity), dtype=np.int64)
    dup = np.flatnonzero(roots != np.arange(len(roots)))
    sims = similarity(np.stack([dup, roots[dup]], 1)) if dup.size else np.zeros(0)
    _apply_roots(dec, alive, roots, np.asarray(sims, np.float32))


class ExactShingles:
    """Shingle sets of pending documents, read from the tasks' docs.jsonl on demand (one pass per batch of
    new documents) and held for the rest of the step: 8 bytes per shingle of every document that is in
    a candidate pair (dedup.verify = "exact")."""

    def __init__(self, plan: dict, offsets: np.ndarray, ngram: int) -> None:
        from gristmill.curate.minhash import MinHasher

        self.plan, self.offsets = plan, offsets
        self.hasher = MinHasher(num_perm=1, ngram=ngram)
        self.shingles: dict[int, np.ndarray] = {}

    def _load(self, wanted: set[int]) -> None:
        import orjson

        missing = sorted(wanted - self.shingles.keys())
        if not missing:
            return
        ranks = np.searchsorted(self.offsets, missing, side="right") - 1
        for rank in np.unique(ranks).tolist():
            lo = int(self.offsets[rank])
            need = {g - lo for g, r in zip(missing, ranks.tolist()) if r == rank}
            with open(task_dir(self.plan["work_dir"], rank) / "docs.jsonl", "rb") as docs:
                for line_no, line in enumerate(docs):
                    if line_no in need:
                        self.shingles[lo + line_no] = np.unique(self.hasher.shingles(orjson.loads(line)["text"]))
                        need.discard(line_no)
                        if not need:
                            break

    def jaccard(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact Jaccard of documents a[i] and b[i] (global indices), (P,) float64."""
        from gristmill.curate.dedup import exact_jaccard

        self._load(set(a.tolist()) | set(b.tolist()))
        return np.array([exact_jaccard(self.shingles[i], self.shingles[j]) for i, j in zip(a.tolist(), b.tolist())],
                        dtype=np.float64)


def _apply_roots(dec: Decisions, alive: np.ndarray, roots: np.ndarray, sims: np.ndarray | None = None) -> None:
    """roots[j] = position (in `alive`) of the first-seen member of j's cluster; sims: the Jaccard of each
    duplicate (in order of position) with its root."""
    size = np.bincount(roots, minlength=len(roots))
    in_cluster = size[roots] > 1
    dec.cluster[alive[in_cluster]] = alive[roots[in_cluster]]
    dup = roots != np.arange(len(roots))
    if dup.any():
        dec.drop(alive[dup], "near_dedup", "near_duplicate")
        dec.duplicate_of[alive[dup]] = alive[roots[dup]]
        if sims is not None:
            dec.similarity[alive[dup]] = sims


# ----------------------------------------------------------------------------------------------
# datatrove backend: our signatures through datatrove's MinHash bucket stage


def save_decisions(plan: dict, dec: Decisions) -> None:
    d = Path(plan["work_dir"]) / "decisions"
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / "arrays.npz", code=dec.code, duplicate_of=dec.duplicate_of, cluster=dec.cluster,
             similarity=dec.similarity, offsets=dec.offsets)
    (d / "meta.json").write_text(json.dumps({"reasons": dec.reasons, "bounds": dec.bounds,
                                             "index_bytes": dec.index_bytes}))


def load_decisions(plan: dict) -> Decisions:
    d = Path(plan["work_dir"]) / "decisions"
    arrays = np.load(d / "arrays.npz", allow_pickle=False)
    meta = json.loads((d / "meta.json").read_text())
    return Decisions(code=arrays["code"], duplicate_of=arrays["duplicate_of"], cluster=arrays["cluster"],
                     similarity=arrays["similarity"], offsets=arrays["offsets"], reasons=[tuple(r) for r in meta["reasons"]],
                     bounds=meta["bounds"], index_bytes=meta["index_bytes"])


def export_datatrove_signatures(plan: dict, rank: int) -> None:
    """Task `rank`'s surviving signatures -> minhash/signatures/bucket_BBB/RRRRR.minhash.sig, each band's
    records (rows x uint32 hash, uint32 local doc index) sorted, as MinhashDedupSignature writes them."""
    cfg = config_from_dict(plan["config"])
    dec = load_decisions(plan)
    info = json.loads((task_dir(plan["work_dir"], rank) / "task.json").read_text())
    lo, hi = dec.offsets[rank], dec.offsets[rank + 1]
    local = np.flatnonzero(dec.code[lo:hi] == KEEP)
    sigs = _signatures(plan, info)[local]
    rows = cfg.dedup.rows
    base = Path(plan["work_dir"]) / "minhash" / "signatures"
    dtype = np.dtype([(f"h{i}", "<u4") for i in range(rows)] + [("doc", "<u4")])
    for b in range(cfg.dedup.bands):
        rec = np.empty(len(local), dtype=dtype)
        for i in range(rows):
            rec[f"h{i}"] = sigs[:, b * rows + i]
        rec["doc"] = local
        rec.sort(order=dtype.names)
        out = base / f"bucket_{b:03d}" / f"{rank:05d}.minhash.sig"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(rec.tobytes())
        os.replace(tmp, out)


def decide_near_datatrove(plan: dict, dec: Decisions) -> None:
    """Near dedup from datatrove's bucket stage output (.dups pairs), each pair confirmed as dedup.verify
    says (the signatures read from the task files by row, memory-mapped), clustered by our union-find so
    the first-seen document of each cluster is kept (as the in-memory backend does)."""
    from gristmill.curate.dedup import UnionFind, estimated_jaccard

    d = config_from_dict(plan["config"]).dedup
    alive = np.flatnonzero(dec.code == KEEP)
    pos = {int(g): j for j, g in enumerate(alive.tolist())}
    sigs = {info["rank"]: _signatures(plan, info, mmap=True) for info in _tasks(plan)}
    exact = ExactShingles(plan, dec.offsets, d.ngram) if d.verify == "exact" else None

    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # global indices -> Jaccard
        if exact is not None:
            return exact.jaccard(a, b)
        ra, rb = (np.searchsorted(dec.offsets, x, side="right") - 1 for x in (a, b))
        sa = np.stack([sigs[r][g - dec.offsets[r]] for r, g in zip(ra.tolist(), a.tolist())])
        sb = np.stack([sigs[r][g - dec.offsets[r]] for r, g in zip(rb.tolist(), b.tolist())])
        return estimated_jaccard(sa, sb)

    uf = UnionFind(len(alive))
    for f in sorted((Path(plan["work_dir"]) / "minhash" / "buckets").glob("*.dups")):
        data = np.fromfile(f, dtype="<u4").reshape(-1, 4).astype(np.int64)  # (file1, doc1, file2, doc2)
        a, b = dec.offsets[data[:, 0]] + data[:, 1], dec.offsets[data[:, 2]] + data[:, 3]
        both = np.array([int(x) in pos and int(y) in pos for x, y in zip(a.tolist(), b.tolist())], dtype=bool)
        a, b = a[both], b[both]
        if d.verify != "none" and a.size:
            ok = similarity(a, b) >= d.threshold
            a, b = a[ok], b[ok]
        for x, y in zip(a.tolist(), b.tolist()):
            uf.union(pos[x], pos[y])
    roots = uf.smallest_all()
    dup = np.flatnonzero(roots != np.arange(len(roots)))
    sims = similarity(alive[dup], alive[roots[dup]]) if dup.size else np.zeros(0)
    _apply_roots(dec, alive, roots, np.asarray(sims, np.float32))


# ----------------------------------------------------------------------------------------------
# writing


class ShardWriter:
    """documents-NNNNN.jsonl.gz, `shard_size` documents each, gzip mtime 0 (byte-identical reruns)."""

    def __init__(self, out_dir: Path, shard_size: int):
        self.out_dir, self.shard_size = out_dir, shard_size
        self.shards: list[tuple[str, int]] = []  # (name, documents)
        self._f = self._raw = None
        self._n = 0
        self.documents = 0
        self.bytes = 0

    def write(self, rec: dict) -> None:
        import orjson

        if self._f is None or self._n >= self.shard_size:
            self._close()
            name = f"documents-{len(self.shards):05d}.jsonl.gz"
            self._tmp = self.out_dir / f".{name}.tmp"
            self._raw = open(self._tmp, "wb")
            self._f = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)
            self.shards.append((name, 0))
            self._n = 0
        self._f.write(orjson.dumps(rec) + b"\n")
        self._n += 1
        self.documents += 1
        self.bytes += len(rec["text"].encode("utf-8"))

    def _close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        name, _ = self.shards[-1]
        self.shards[-1] = (name, self._n)
        os.replace(self._tmp, self.out_dir / name)
        self._f = None

    def close(self) -> None:
        if not self.shards:  # an empty corpus still gets one (empty) shard: downstream reads a valid folder
            name = "documents-00000.jsonl.gz"
            self._tmp = self.out_dir / f".{name}.tmp"
            with open(self._tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0):
                pass
            os.replace(self._tmp, self.out_dir / name)
            self.shards.append((name, 0))
            return
        self._close()


def active_steps(cfg, models: dict) -> list[str]:
    """The funnel's steps for this configuration (steps that are off are left out)."""
    h = cfg.heuristics
    on = {"read": True, "url_filter": cfg.url_filter.enabled,
          "decontaminate": bool(models.get("decontaminate")) and cfg.decontamination.action == "drop",
          "prefilter": cfg.langid.enabled and cfg.langid.prefilter, "extract": True,
          "langid": cfg.langid.enabled, "gopher_repetition": h.gopher_repetition.enabled,
          "gopher_quality": h.gopher_quality.enabled, "c4": h.c4.enabled, "c4_badwords": bool(h.c4.bad_words),
          "fineweb": h.fineweb.enabled, "perplexity": bool(models.get("reference")),
          "quality": bool(models.get("quality")), "exact_dedup": cfg.dedup.exact, "near_dedup": cfg.dedup.near}
    return [s for s in STEPS if on[s]]


def write_outputs(plan: dict, dec: Decisions) -> dict[str, Any]:
    """Shards and the final ledger, task by task in order. Returns accounting + what was written."""
    import orjson

    cfg = config_from_dict(plan["config"])
    out = Path(plan["out_dir"])
    infos = _tasks(plan)
    ids = _pending_ids(plan, infos)  # global index -> id, for duplicate_of / cluster
    shards = ShardWriter(out, cfg.shard_size)
    ledger_name = f"ledger.{cfg.ledger_format}"
    tmp_ledger = out / f".{ledger_name}.tmp"
    rows_all: list[dict] = []  # small summaries for accounting / funnel (not the text)
    records_read = 0
    try:
        with LedgerWriter(tmp_ledger, fmt=cfg.ledger_format) as ledger:
            for info in infos:
                rank = info["rank"]
                records_read += info["records_read"]
                g = int(dec.offsets[rank])
                with open(task_dir(plan["work_dir"], rank) / "docs.jsonl", "rb") as docs:
                    for row in iter_ledger(task_dir(plan["work_dir"], rank) / "ledger.jsonl"):
                        row.pop("exact_key", None)
                        if row["stage"] == "pending":
                            rec = orjson.loads(docs.readline())
                            if rec["id"] != row["id"]:
                                raise CurateError(f"task {rank}: documents and ledger out of step at {row['id']}")
                            code = int(dec.code[g])
                            if dec.cluster[g] >= 0:
                                row["cluster"] = ids[dec.cluster[g]]
                            if code == KEEP and row["reason"] == "decontaminated":  # flagged, kept (flag mode)
                                row.update(kept=True, stage="decontaminate")
                                shards.write(document_record(rec["id"], rec["text"], rec["m"]))
                            elif code == KEEP:
                                row.update(kept=True, stage=None, reason=None)
                                shards.write(document_record(rec["id"], rec["text"], rec["m"]))
                            else:
                                row["stage"], row["reason"] = dec.reasons[code]
                                row["detail"] = None  # a flag's match: moot once the document is dropped
                                if dec.duplicate_of[g] >= 0:
                                    row["duplicate_of"] = ids[dec.duplicate_of[g]]
                                if not np.isnan(dec.similarity[g]):
                                    row["similarity"] = round(float(dec.similarity[g]), 4)
                            g += 1
                        ledger.write(row)
                        rows_all.append({"kept": row["kept"], "stage": row["stage"], "reason": row["reason"],
                                         "bytes_raw": row["bytes_raw"], "bytes_text": row["bytes_text"],
                                         "bytes_clean": row["bytes_clean"]})
        shards.close()
        os.replace(tmp_ledger, out / ledger_name)
    finally:
        tmp_ledger.unlink(missing_ok=True)
    acc = accounting(rows_all)
    check_accounting(acc, records_read=records_read, documents_written=shards.documents, where=str(out))
    return {"accounting": acc, "funnel": funnel(rows_all, active_steps(cfg, plan["models"])), "shards": shards.shards, "ledger": ledger_name,
            "documents_bytes": shards.bytes, "records_read": records_read}


def finalize(plan: dict):
    """Everything after the tasks; ends by writing the manifest (the stage is then finished)."""
    from gristmill.curate.report import write_report
    from gristmill.manifests import Manifest, output_record, write_manifest

    cfg = config_from_dict(plan["config"])
    out = Path(plan["out_dir"])
    if cfg.dedup.near and cfg.dedup.backend == "datatrove":
        dec = load_decisions(plan)
        decide_near_datatrove(plan, dec)
    else:
        dec = decide_before_near(plan)
        if cfg.dedup.near:
            decide_near_memory(plan, dec)
    result = write_outputs(plan, dec)
    result["bounds"] = dec.bounds
    n_pending = int(len(dec.code))
    result["dedup_index"] = {"documents": n_pending, "bytes": int(dec.index_bytes),
                             "bytes_per_document": round(dec.index_bytes / n_pending, 1) if n_pending else 0.0}
    report_files = write_report(plan, result)

    m = Manifest.from_dict(plan["manifest"])
    acc = result["accounting"]
    m.outputs = [output_record(out, name, "documents", records=n) for name, n in result["shards"]]
    m.outputs.append(output_record(out, result["ledger"], "ledger", records=acc["records_read"]))
    m.outputs += [output_record(out, name, kind) for name, kind in report_files]
    m.metrics = {**m.metrics, "records_read": acc["records_read"], "kept": acc["kept"], "dropped": acc["dropped"],
                 "dropped_by_stage": acc["dropped_by_stage"], "documents_bytes": result["documents_bytes"],
                 "funnel": [{k: f[k] for k in ("step", "documents", "bytes")} for f in result["funnel"]],
                 "bounds": result["bounds"], "dedup_index": result["dedup_index"],
                 **({"evaluation": result["evaluation"]} if result.get("evaluation") else {})}
    if acc.get("flagged"):  # kept but marked (decontamination.action = "flag")
        m.metrics["flagged"] = acc["flagged"]
    m.events = plan.get("events", [])
    write_manifest(out, m)
    return m
