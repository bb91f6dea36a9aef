"""The curation recipe as datatrove PipelineStep blocks, and the jobs an executor runs.

Per task (one input file, or a slice of an .html folder), streaming, in record order:

    ReadBlock -> UrlFilterBlock -> ExtractBlock -> LangIdBlock -> HeuristicsBlock -> DecontaminateBlock
        -> ScoreBlock -> DedupKeysBlock -> TaskWriter

Every record travels to the end: a block that drops one marks `metadata["drop"] = (step, reason,
detail)` and passes it on, so TaskWriter writes one ledger row per record. Survivors ("pending")
go to the task's work folder with their scores, exact-dedup key and MinHash signature. A task's
folder appears atomically (renamed from a temporary name) before datatrove marks the task done, so
a killed task leaves nothing half-written and a rerun redoes exactly the unfinished tasks.

Then one global step (`FinalizeStep`, one task) applies the corpus-wide decisions in funnel order
(perplexity percentiles, quality-score percentile, exact dedup, near dedup), writes the document shards,
the ledger, stats, plot, report and the manifest. With `dedup.backend = "datatrove"` the LSH runs
in datatrove's MinHash bucket stage (files on shared storage, many tasks) between the two.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gristmill.config import build
from gristmill.manifests import atomic_folder
from gristmill.curate.config import CurateConfig
from gristmill.curate.ledger import TASK_FIELDS, LedgerWriter, empty_row
from gristmill.curate.readers import TaskUnit, read_unit

READ_COUNT = "read.json"  # written by ReadBlock into the task's temporary folder: records it yielded


def config_from_dict(d: dict) -> CurateConfig:
    return build(CurateConfig, d, section="curate")


def task_dir(work: str | Path, rank: int) -> Path:
    return Path(work) / "tasks" / f"{rank:05d}"


def task_tmp_dir(work: str | Path, rank: int) -> Path:
    return Path(work) / "tasks" / f".{rank:05d}.partial"


def _alive(doc: Document) -> bool:
    return "drop" not in doc.metadata


def _drop(doc: Document, step: str, reason: str, detail: str | None = None) -> None:
    doc.metadata["drop"] = (step, reason, detail)
    doc.text = ""  # free the page now; the ledger keeps what it needs from metadata


def _batches(data: DocumentsPipeline, size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in data:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Block(PipelineStep):
    """A gristmill block: holds the resolved config as a dict (picklable, rebuilt in the worker)."""

    type = "🌾 - GRISTMILL"

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self._cfg: CurateConfig | None = None

    @property
    def cfg(self) -> CurateConfig:
        if self._cfg is None:
            self._cfg = config_from_dict(self.config)
        return self._cfg


class ReadBlock(_Block):
    """Records of this task's input unit(s) as Documents (text = HTML or plain text)."""

    name = "📖 read"

    def __init__(self, config: dict, units: list[TaskUnit], work_dir: str, progress: bool = False):
        super().__init__(config)
        self.units = units
        self.work_dir = work_dir
        self.progress = progress

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tmp = task_tmp_dir(self.work_dir, rank)
        n = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(desc=f"task {rank}", unit=" records", leave=False, mininterval=1.0)
        for unit in self.units[rank::world_size]:
            for rec in read_unit(unit, self.cfg.readers):
                meta = {"source": rec.source, "offset": rec.offset, "offset_kind": rec.offset_kind, "url": rec.url,
                        "record_type": rec.record_type, "task": rank, "seq": n, "is_html": rec.is_html,
                        "bytes_raw": rec.raw_bytes, "bytes_text": 0, "bytes_clean": 0}
                if rec.date:
                    meta["date"] = rec.date
                meta.update(rec.meta)
                doc = Document(text=rec.content, id=rec.id, metadata=meta)
                if rec.drop:
                    _drop(doc, "read", rec.drop, rec.detail)
                n += 1
                self.stat_update("records")
                if bar is not None:
                    bar.update()
                yield doc
        if bar is not None:
            bar.close()
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / READ_COUNT).write_text(json.dumps({"records": n}))


class UrlFilterBlock(_Block):
    """URL blocklists (datatrove URLFilter + the user's lists), before extraction: a blocked page costs no
    trafilatura time. Records without a URL pass."""

    name = "🚫 url filter"

    def __init__(self, config: dict, domain_index: str | None):
        super().__init__(config)
        self.domain_index = domain_index  # the bundled domain list's hash index (urlfilter.domain_index)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if not self.cfg.url_filter.enabled:
            yield from data
            return
        from gristmill.curate.urlfilter import BlocklistURLFilter, url_verdict

        filt = BlocklistURLFilter(self.cfg.url_filter, self.domain_index)
        for doc in data:
            if _alive(doc) and doc.metadata.get("url"):
                with self.track_time():
                    keep, reason, detail = url_verdict(filt, doc)
                if not keep:
                    _drop(doc, "url_filter", reason, detail)
                    self.stat_update(reason)
            yield doc


class ExtractBlock(_Block):
    """HTML -> main text (trafilatura, time-limited); before that, the cheap language pre-check."""

    name = "⛏ extract"

    def __init__(self, config: dict, langid_model: str | None, keep_extracted: bool = False):
        super().__init__(config)
        self.langid_model = langid_model
        self.keep_extracted = keep_extracted  # the demo's evaluation scores extraction before filters edit it

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.extract import Extractor
        from gristmill.curate.langid import LanguageIdentifier, long_text_runs, prefilter_verdict

        lcfg = self.cfg.langid
        lid = LanguageIdentifier(self.langid_model) if (lcfg.enabled and lcfg.prefilter) else None
        extractor = Extractor(self.cfg.extraction)
        try:
            for doc in data:
                if not _alive(doc):
                    yield doc
                    continue
                if doc.metadata["is_html"]:
                    if lid is not None:
                        rough = long_text_runs(doc.text)
                        if len(rough) >= lcfg.prefilter_min_chars:
                            [(lang, score)] = lid.predict([rough])
                            keep, reason = prefilter_verdict(lang, score, len(rough), lcfg.languages,
                                                             lcfg.prefilter_min_score, lcfg.prefilter_min_chars)
                            if not keep:
                                doc.metadata["language"], doc.metadata["language_score"] = lang, score
                                _drop(doc, "prefilter", reason, "long text runs of the HTML, before extraction")
                                self.stat_update("prefiltered")
                                yield doc
                                continue
                    with self.track_time():
                        text, reason = extractor.extract(doc.text)
                    if text is None:
                        _drop(doc, "extract", reason)
                        self.stat_update(reason)
                        yield doc
                        continue
                    doc.text = text
                if self.keep_extracted:
                    doc.metadata["extracted"] = doc.text
                doc.metadata["bytes_text"] = len(doc.text.encode("utf-8"))
                self.stat_update("extracted")
                yield doc
        finally:
            self.stat_update("reused_identical", value=extractor.reused)
            self.stat_update("extract_full_path", value=extractor.fallbacks)  # poor fast results
            extractor.close()


class LangIdBlock(_Block):
    """fastText language ID on the extracted text, a batch at a time."""

    name = "🌍 langid"

    def __init__(self, config: dict, langid_model: str | None):
        super().__init__(config)
        self.langid_model = langid_model

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.langid import LanguageIdentifier, language_verdict

        lcfg = self.cfg.langid
        if not lcfg.enabled:
            yield from data
            return
        lid = LanguageIdentifier(self.langid_model, max_chars=lcfg.max_chars)
        for batch in _batches(data, self.cfg.batch_size):
            live = [d for d in batch if _alive(d)]
            with self.track_time("batch"):
                preds = lid.predict([d.text for d in live])
            for doc, (lang, score) in zip(live, preds):
                doc.metadata["language"], doc.metadata["language_score"] = lang, score
                keep, reason = language_verdict(lang, score, lcfg.languages, lcfg.min_score)
                if not keep:
                    _drop(doc, "langid", reason)
                    self.stat_update(reason)
            yield from batch


class HeuristicsBlock(_Block):
    """datatrove's Gopher / C4 / FineWeb filters (through their filter() methods)."""

    name = "🔻 heuristics"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.heuristics import Heuristics

        heur = Heuristics(self.cfg.heuristics)
        for doc in data:
            if _alive(doc):
                with self.track_time():
                    keep, step, reason = heur.apply(doc)  # C4 may shorten doc.text
                if keep:
                    doc.metadata["bytes_clean"] = len(doc.text.encode("utf-8"))
                else:
                    doc.metadata["bytes_clean"] = 0
                    _drop(doc, step, reason)
                    self.stat_update(reason)
            yield doc


class DecontaminateBlock(_Block):
    """Documents sharing a word n-gram with an evaluation set (on the final text, after C4 removed lines):
    dropped, or with decontamination.action = "flag" kept with the match in metadata["contamination"]."""

    name = "🧪 decontaminate"

    def __init__(self, config: dict, index_dir: str | None):
        super().__init__(config)
        self.index_dir = index_dir  # decontaminate.build_index's folder; None = no evaluation sets

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if not self.index_dir:
            yield from data
            return
        from gristmill.curate.decontaminate import REASON, STAGE, Decontaminator, match_detail

        finder = Decontaminator(self.index_dir)
        flag = self.cfg.decontamination.action == "flag"
        for batch in _batches(data, self.cfg.batch_size):
            live = [d for d in batch if _alive(d)]
            with self.track_time("batch"):
                matches = finder.find([d.text for d in live]) if live else []
            for doc, match in zip(live, matches):
                if match is None:
                    continue
                self.stat_update("flagged" if flag else REASON)
                if flag:
                    doc.metadata["contamination"] = match_detail(match)
                else:
                    _drop(doc, STAGE, REASON, match_detail(match))
            yield from batch


class ScoreBlock(_Block):
    """Perplexity under the reference LM and the quality score (verdicts come in finalize, where the
    percentiles of the whole corpus are known)."""

    name = "📏 score"

    def __init__(self, config: dict, reference_model: str | None, quality_model: str | None):
        super().__init__(config)
        self.reference_model = reference_model
        self.quality_model = quality_model

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if not self.reference_model and not self.quality_model:
            yield from data
            return
        scorer = quality = None
        if self.reference_model:
            from gristmill.curate.perplexity import load_scorer

            scorer = load_scorer(self.reference_model)
        if self.quality_model:
            from gristmill.curate.score import QualityScorer

            quality = QualityScorer(self.quality_model, self.reference_model)
        for batch in _batches(data, self.cfg.batch_size):
            live = [d for d in batch if _alive(d)]
            if live:
                texts = [d.text for d in live]
                with self.track_time("batch"):
                    ppl = None
                    if scorer is not None:
                        ppl = [float(p) for p in scorer.perplexities(texts)]
                        for d, p in zip(live, ppl):
                            d.metadata["perplexity"] = p
                    if quality is not None:  # the quality score (score.py), the number finalize cuts by
                        for d, q in zip(live, quality.scores(texts, ppl)):
                            d.metadata["quality"] = float(q)
            yield from batch


class DedupKeysBlock(_Block):
    """Exact-dedup key (sha256 of normalised text) and MinHash signature, vectorised per batch."""

    name = "🔑 dedup keys"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.dedup import MinHasher, exact_key

        d = self.cfg.dedup
        hasher = MinHasher(num_perm=d.num_perm, ngram=d.ngram) if d.near else None
        for batch in _batches(data, self.cfg.batch_size):
            live = [x for x in batch if _alive(x)]
            if live:
                with self.track_time("batch"):
                    if d.exact:
                        for x in live:
                            x.metadata["exact_key"] = _key_text(exact_key(x.text))
                    if hasher is not None:
                        sigs = hasher.signatures([x.text for x in live])  # (B, num_perm) uint32
                        for x, s in zip(live, sigs):
                            x.metadata["signature"] = s
            yield from batch


def _key_text(key: Any) -> str:
    return key.hex() if isinstance(key, bytes) else str(key)


def ledger_row(doc: Document) -> dict[str, Any]:
    m = doc.metadata
    row = empty_row()
    drop = m.get("drop")
    row.update(id=doc.id, source=m["source"], offset=m["offset"], offset_kind=m["offset_kind"], url=m.get("url"),
               record_type=m["record_type"], task=m["task"], seq=m["seq"], kept=False,
               language=m.get("language"), language_score=m.get("language_score"),
               perplexity=m.get("perplexity"), quality=m.get("quality"), bytes_raw=m.get("bytes_raw", 0),
               bytes_text=m.get("bytes_text", 0), bytes_clean=m.get("bytes_clean", 0),
               exact_key=m.get("exact_key"))
    if drop:
        row["stage"], row["reason"], row["detail"] = drop
    else:
        row["stage"], row["reason"] = "pending", "pending"  # finalize decides
        if m.get("contamination"):  # decontamination.action = "flag": finalize keeps the mark if it keeps the doc
            row["reason"], row["detail"] = "decontaminated", m["contamination"]
    return row


def document_record(doc_id: str, text: str, m: dict) -> dict[str, Any]:
    """The published document: {"id", "text", "url", "metadata"} (the brief's folder format)."""
    meta = {"source": os.path.basename(m["source"]), "offset": m["offset"]}
    for k in ("date", "language", "language_score", "perplexity", "quality", "contamination"):
        if m.get(k) is not None:
            meta[k] = m[k]
    return {"id": doc_id, "text": text, "url": m.get("url"), "metadata": meta}


class TaskWriter(_Block):
    """The task's sink: a ledger row for every record; pending documents, their signatures and a
    summary, into a temporary folder that is renamed into place at the end (atomic per task)."""

    name = "💾 task writer"

    def __init__(self, config: dict, work_dir: str, keep_extracted: bool = False):
        super().__init__(config)
        self.work_dir = work_dir
        self.keep_extracted = keep_extracted

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # a fixed temporary name: the reader block writes its record count into it; cleared first
        # of what a killed earlier attempt left, renamed into place only when every row is written
        with atomic_folder(task_dir(self.work_dir, rank), tmp=task_tmp_dir(self.work_dir, rank)) as tmp:
            self._write_task(tmp, data, rank)
        return
        yield  # a generator that yields nothing: datatrove drains it

    def _write_task(self, tmp: Path, data: DocumentsPipeline, rank: int) -> None:
        import orjson

        rows = pending = 0
        sig_dtype, num_perm = None, 0
        extracted = open(tmp / "extracted.jsonl", "wb") if self.keep_extracted else None
        with LedgerWriter(tmp / "ledger.jsonl", fmt="jsonl", fields=TASK_FIELDS) as ledger, \
                open(tmp / "docs.jsonl", "wb") as docs, open(tmp / "signatures.bin", "wb") as sigs:
            for doc in data:
                ledger.write(ledger_row(doc))
                rows += 1
                m = doc.metadata
                if extracted is not None and "extracted" in m:
                    extracted.write(orjson.dumps({"id": doc.id, "text": m["extracted"]}) + b"\n")
                if not _alive(doc):
                    continue
                keep = {k: m[k] for k in ("source", "offset", "url", "date", "language", "language_score",
                                          "perplexity", "quality", "contamination") if m.get(k) is not None}
                docs.write(orjson.dumps({"id": doc.id, "text": doc.text, "m": keep}) + b"\n")
                sig = m.get("signature")
                if sig is not None:
                    sig = np.ascontiguousarray(sig)
                    sig_dtype, num_perm = sig.dtype.str, sig.shape[0]
                    sigs.write(sig.tobytes())
                pending += 1
                self.stat_update("pending")
        read = json.loads((tmp / READ_COUNT).read_text())["records"] if (tmp / READ_COUNT).is_file() else -1
        if extracted is not None:
            extracted.close()
        info = {"rank": rank, "records": rows, "records_read": read, "pending": pending,
                "signature_dtype": sig_dtype, "num_perm": num_perm}
        (tmp / "task.json").write_text(json.dumps(info))


def per_task_pipeline(config: dict, units: list[TaskUnit], work_dir: str, models: dict[str, str | None],
                      *, progress: bool = False, keep_extracted: bool = False) -> list[PipelineStep]:
    """The blocks one task runs, in order. `models`: langid / reference / quality paths, the URL domain index
    and the decontamination index folder (None = off)."""
    return [
        ReadBlock(config, units, work_dir, progress=progress),
        UrlFilterBlock(config, models.get("url_blocklist")),
        ExtractBlock(config, models.get("langid"), keep_extracted),
        LangIdBlock(config, models.get("langid")),
        HeuristicsBlock(config),
        DecontaminateBlock(config, models.get("decontaminate")),
        ScoreBlock(config, models.get("reference"), models.get("quality")),
        DedupKeysBlock(config),
        TaskWriter(config, work_dir, keep_extracted),
    ]


class _PlanStep(PipelineStep):
    """A step of the global jobs: it reads everything it needs from the run's plan (a JSON-able dict)."""

    type = "🌾 - GRISTMILL"

    def __init__(self, plan: dict):
        super().__init__()
        self.plan = plan


class FinalizeStep(_PlanStep):
    """The global step (one task): corpus-wide verdicts, dedup, shards, ledger, report, manifest."""

    name = "🏁 finalize"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.finalize import finalize

        finalize(self.plan)
        return
        yield


class SelectStep(_PlanStep):
    """datatrove backend, job 2 (one task): every verdict before near dedup, saved for the next jobs."""

    name = "⚖ select"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.finalize import decide_before_near, save_decisions

        save_decisions(self.plan, decide_before_near(self.plan))
        return
        yield


class SignatureExport(_PlanStep):
    """datatrove backend, job 3 (a task per input task): this task's surviving signatures as
    datatrove MinHash bucket files (sorted per band), so MinhashDedupBuckets can find the pairs."""

    name = "🎯 signatures -> datatrove buckets"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from gristmill.curate.finalize import export_datatrove_signatures

        for r in range(rank, self.plan["n_tasks"], world_size):
            export_datatrove_signatures(self.plan, r)
        return
        yield


def minhash_config(cfg: CurateConfig):
    """datatrove's MinhashConfig matching our signatures (uint32 values, `bands` x `rows`)."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(n_grams=cfg.dedup.ngram, num_buckets=cfg.dedup.bands, hashes_per_bucket=cfg.dedup.rows,
                         hash_config=HashConfig(precision=32, hash_fc="sha1"))


def build_jobs(plan: dict, units: list[TaskUnit], *, progress: bool = False) -> list[tuple[str, list, int]]:
    """(name, pipeline, tasks) in run order; each job depends on the one before it."""
    cfg = config_from_dict(plan["config"])
    work = plan["work_dir"]
    n = plan["n_tasks"]
    jobs: list[tuple[str, list, int]] = [
        ("tasks", per_task_pipeline(plan["config"], units, work, plan["models"], progress=progress,
                                    keep_extracted=plan.get("keep_extracted", False)), n)]
    if cfg.dedup.near and cfg.dedup.backend == "datatrove":
        from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

        jobs += [
            ("select", [SelectStep(plan)], 1),
            ("signatures", [SignatureExport(plan)], max(1, min(n, cfg.tasks or n))),
            ("buckets", [MinhashDedupBuckets(input_folder=str(Path(work) / "minhash" / "signatures"),
                                             output_folder=str(Path(work) / "minhash" / "buckets"),
                                             config=minhash_config(cfg))], cfg.dedup.bands),
        ]
    jobs.append(("finalize", [FinalizeStep(plan)], 1))
    return jobs
