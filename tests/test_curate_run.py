"""run_curate end to end on generated dumps: manifest, determinism, skip, resume after a kill, scores."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gristmill.curate import CurateError
from gristmill.curate.config import CurateConfig, DedupConfig, ReadersConfig
from gristmill.curate.run import run_curate
from gristmill.demo import write_demo_data
from gristmill.manifests import read_manifest, sha256_file, verify

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    write_demo_data(d, pages=100, seed=1)
    return d


def _outputs(out: Path) -> dict[str, str]:
    m = read_manifest(out)
    return {o.path: o.sha256 for o in m.outputs if o.kind in ("documents", "ledger", "stats")}


def test_run_on_the_demo_dump(demo, tmp_path):
    out = tmp_path / "curated"
    m = run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"], "truth": [demo / "truth.jsonl"]}, out)
    assert verify(out) == [] and read_manifest(out).id == m.id
    kinds = sorted({o.kind for o in m.outputs})
    assert kinds == ["documents", "ledger", "plot", "report", "stats"]
    met = m.metrics
    truth = [json.loads(x) for x in (demo / "truth.jsonl").read_text().splitlines()]
    assert met["records_read"] == len(truth) + 1  # + the warcinfo record
    assert met["kept"] + sum(met["dropped"].values()) == met["records_read"]
    docs = [json.loads(x) for x in gzip.open(out / "documents-00000.jsonl.gz", "rt")]
    assert len(docs) == met["kept"] > 0
    assert set(docs[0]) == {"id", "text", "url", "metadata"} and docs[0]["metadata"]["language"] == "en"
    ev = met["evaluation"]
    assert ev["records_missing_from_ledger"] == 0
    assert ev["language_id_accuracy"] >= 0.95 and ev["spam_kept_share"] <= 0.2
    assert ev["near_dup_reached_dedup"] >= 3 and ev["near_dup_points_to_its_original"] == 1.0
    assert ev["near_dup_precision"] >= 0.8 and ev["near_dup_recall"] >= 0.8
    assert ev["extraction_token_f1"] >= 0.8
    report = (out / "report.md").read_text()
    assert "language id accuracy" in report and "![funnel](funnel.png)" in report
    assert not (out / "_work").exists()
    # kept documents are English, deduplicated: no two share a truth cluster
    by_id = {t["record_id"]: t for t in truth}
    kept = [by_id[d["id"]] for d in docs]
    assert all(t["language"] == "en" for t in kept)
    originals = [t["duplicate_of"] or t["url"] for t in kept]
    assert len(originals) == len(set(originals))

    # same config and inputs: recognised as finished, nothing rewritten
    before = (out / "manifest.json").stat().st_mtime_ns
    again = run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"], "truth": [demo / "truth.jsonl"]}, out)
    assert again.id == m.id and (out / "manifest.json").stat().st_mtime_ns == before

    # a fresh run elsewhere, with 2 workers and the file read as byte ranges (several tasks), gives
    # byte-identical documents, ledger and stats
    out2 = tmp_path / "again"
    m2 = run_curate(CurateConfig(workers=2, readers=ReadersConfig(split_bytes=60_000)),
                    {"data": [demo / "web.warc.gz"], "truth": [demo / "truth.jsonl"]}, out2)
    assert int(m2.events[0]["detail"].split()[0]) >= 3  # "<n> task units from ..."
    assert _outputs(out2) == _outputs(out)

    # the truth beside the WARC is not a hidden input: without --truth no evaluation, and another id
    m3 = run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"]}, tmp_path / "no-truth")
    assert m3.id != m.id and "evaluation" not in m3.metrics
    with pytest.raises(CurateError, match="give one truth.jsonl"):
        run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"], "truth": [demo / "web.warc.gz"]}, tmp_path / "bad")


def test_perplexity_and_quality_filters_with_trained_models(demo, tmp_path):
    from gristmill.curate.config import QualityConfig, QualityModelConfig, ReferenceConfig
    from gristmill.curate.model_stages import run_quality_model, run_reference

    ref, qm = tmp_path / "ref", tmp_path / "qm"
    r = run_reference(ReferenceConfig(), {"text": [demo / "reference" / "clean.txt"]}, ref)
    # negatives: the raw dump itself, its pages extracted without any filtering
    q = run_quality_model(QualityModelConfig(epochs=5), {"positive": [demo / "reference" / "clean.txt"],
                                                         "negative": [demo / "web.warc.gz"], "reference": [ref]}, qm)
    assert "log_perplexity" in q.metrics["combiner_weights"] and q.metrics["signals_auc"]["combined"] > 0.5
    assert (r.stage, q.stage) == ("reference-lm", "quality-model") and verify(ref) == [] and verify(qm) == []
    assert run_reference(ReferenceConfig(), {"text": [demo / "reference" / "clean.txt"]}, ref).id == r.id  # skip
    assert q.metrics["train_documents"]["lq"] > 50
    out = tmp_path / "out"
    cfg = CurateConfig(dedup=DedupConfig(near=False), quality=QualityConfig(keep_percent=70.0))
    m = run_curate(cfg, {"data": [demo / "web.warc.gz"], "reference": [ref], "quality": [qm]}, out)
    ledger = pq.read_table(out / "ledger.parquet").to_pylist()
    scored = [r for r in ledger if r["perplexity"] is not None]
    assert scored and all(r["quality"] is not None for r in scored)
    b = m.metrics["bounds"]["perplexity"]
    assert b["low"] < b["high"]
    cut = m.metrics["bounds"]["quality"]["threshold"]
    assert m.metrics["bounds"]["quality"]["keep_percent"] == 70.0
    for r in scored:  # the verdicts follow the corpus percentiles (perplexity, then the quality score)
        if r["reason"] == "perplexity_too_high":
            assert r["perplexity"] > b["high"]
        elif r["reason"] == "perplexity_too_low":
            assert r["perplexity"] < b["low"]
        elif r["reason"] == "quality_low":
            assert b["low"] <= r["perplexity"] <= b["high"] and r["quality"] < cut
        elif r["kept"]:
            assert b["low"] <= r["perplexity"] <= b["high"] and r["quality"] >= cut
    # the quality step keeps the top 70 % of the documents that reached it
    reached = [r for r in scored if r["stage"] not in ("perplexity",)]
    passed = [r for r in reached if r["reason"] != "quality_low"]
    assert abs(len(passed) - round(0.7 * len(reached))) <= 1
    assert m.metrics["dropped"].get("perplexity_too_high", 0) >= 1 and m.metrics["kept"] > 0
    assert {i.role for i in m.inputs} == {"data", "reference", "quality"}
    docs = [json.loads(x) for x in gzip.open(out / "documents-00000.jsonl.gz", "rt")]
    assert all("perplexity" in d["metadata"] and "quality" in d["metadata"] for d in docs)


def test_resume_after_a_killed_task(tmp_path):
    """Kill the process in the middle of task 1 of 3; the rerun skips task 0, redoes task 1 and gives
    the same output as an uninterrupted run, with no duplicate ledger rows."""
    inputs = []
    for seed in range(3):
        d = tmp_path / f"dump{seed}"
        write_demo_data(d, pages=30, seed=10 + seed)
        inputs.append(d / "web.warc.gz")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import gristmill.curate.extract as ex
        from gristmill.curate.config import CurateConfig
        from gristmill.curate.run import run_curate
        real, calls = ex._call_trafilatura, []
        def dying(html, options):
            calls.append(1)
            if len(calls) == 30:  # task 0 has fewer pages: this is inside task 1
                os.kill(os.getpid(), signal.SIGKILL)
            return real(html, options)
        ex._call_trafilatura = dying
        run_curate(CurateConfig(), {{"data": [Path(p) for p in {[str(p) for p in inputs]!r}]}}, Path({str(out)!r}))
    """)
    log = tmp_path / "killed.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            assert proc.wait(timeout=300) == -9, log.read_text()[-2000:]
        finally:
            try:  # any helper process the killed run left behind (its own session)
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
    work = out / "_work"
    assert not (out / "manifest.json").exists()
    assert (work / "tasks" / "00000" / "task.json").is_file()  # task 0 finished
    assert not (work / "tasks" / "00001").exists()  # task 1 did not
    assert (work / "logs" / "tasks" / "completions" / "00000").is_file()
    done0 = (work / "tasks" / "00000" / "task.json").stat().st_mtime_ns

    import gristmill.curate.pipeline as pipeline

    started = []
    real_run = pipeline.ReadBlock.run

    def spy(self, data=None, rank=0, world_size=1):
        started.append(rank)
        return real_run(self, data, rank, world_size)

    pipeline.ReadBlock.run = spy
    try:
        m = run_curate(CurateConfig(), {"data": inputs}, out, keep_work=True)
    finally:
        pipeline.ReadBlock.run = real_run
    assert started == [1, 2]  # the finished task was skipped
    assert (work / "tasks" / "00000" / "task.json").stat().st_mtime_ns == done0
    clean = tmp_path / "clean"
    m2 = run_curate(CurateConfig(), {"data": inputs}, clean)
    assert m.id == m2.id and _outputs(out) == _outputs(clean)
    ledger = pq.read_table(out / "ledger.parquet").to_pylist()
    assert len(ledger) == len({(r["source"], r["offset"]) for r in ledger}) == m.metrics["records_read"]


def test_force_and_changed_config_start_clean(demo, tmp_path):
    out = tmp_path / "out"
    cfg = CurateConfig(dedup=DedupConfig(near=False))
    m1 = run_curate(cfg, {"data": [demo / "web.warc.gz"]}, out)
    # a leftover work folder of another run id is thrown away, not mixed in
    (out / "_work" / "tasks" / "00000").mkdir(parents=True)
    (out / "_work" / "STATE.json").write_text(json.dumps({"id": "other", "units": []}))
    m2 = run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"]}, out)
    assert m2.id != m1.id and read_manifest(out).id == m2.id
    assert m2.metrics["dropped"].get("near_duplicate", 0) > 0
    m3 = run_curate(CurateConfig(), {"data": [demo / "web.warc.gz"]}, out, force=True)
    assert m3.id == m2.id and sha256_file(out / "ledger.parquet") == dict(
        (o.path, o.sha256) for o in m2.outputs)["ledger.parquet"]
    assert os.listdir(out) and not (out / "_work").exists()
