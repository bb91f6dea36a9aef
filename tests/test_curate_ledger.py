"""The ledger: one row per input record, read = kept + dropped, the funnel computed from it."""
from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import pyarrow.parquet as pq
import pytest
from curate_fixtures import english_page, german_page, html_response, write_warc

from gristmill.curate import CurateError
from gristmill.curate.config import CurateConfig
from gristmill.curate.ledger import (COLUMNS, LedgerWriter, accounting, check_accounting, empty_row, funnel,
                                     iter_ledger, read_ledger)
from gristmill.curate.run import run_curate
from gristmill.manifests import read_manifest, verify


def _row(i: int, kept: bool, stage: str | None = None, reason: str | None = None, raw=100, text=40, clean=30) -> dict:
    r = empty_row()
    r.update(id=f"r{i}", source="f", offset=i, offset_kind="line", record_type="jsonl", task=0, seq=i, kept=kept,
             stage=stage, reason=reason, bytes_raw=raw, bytes_text=text, bytes_clean=clean)
    return r


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.gz"])
def test_ledger_writer_round_trip(tmp_path, fmt):
    rows = [_row(i, i % 2 == 0, None if i % 2 == 0 else "read", None if i % 2 == 0 else "request") for i in range(25)]
    rows[3]["perplexity"] = float("nan")
    path = tmp_path / f"ledger.{fmt}"
    with LedgerWriter(path, fmt=fmt, rows_per_group=10) as w:
        w.write_many(rows)
    back = list(iter_ledger(path))
    assert len(back) == 25 and [r["id"] for r in back] == [f"r{i}" for i in range(25)]
    assert set(back[0]) == set(COLUMNS)
    assert read_ledger(path).num_rows == 25
    assert read_ledger(path, ["id", "kept"]).column_names == ["id", "kept"]


def test_accounting_and_its_check():
    rows = [_row(0, True), _row(1, False, "read", "request"), _row(2, False, "langid", "language"),
            _row(3, False, "read", "request")]
    acc = accounting(rows)
    assert acc == {"records_read": 4, "kept": 1, "dropped": {"language": 1, "request": 2},
                   "dropped_by_stage": {"read": 2, "langid": 1}, "flagged": {}}
    check_accounting(acc, records_read=4, documents_written=1, where="x")
    with pytest.raises(CurateError, match="readers read 5"):
        check_accounting(acc, records_read=5, documents_written=1, where="x")
    with pytest.raises(CurateError, match="2 were written"):
        check_accounting(acc, records_read=4, documents_written=2, where="x")


def test_funnel_counts_documents_and_bytes_after_each_step():
    rows = [_row(0, True), _row(1, False, "read", "request", raw=50), _row(2, False, "extract", "extract_empty"),
            _row(3, False, "c4", "c4:lorem_ipsum")]
    f = funnel(rows, ["read", "extract", "langid", "c4", "near_dedup"])
    assert [x["documents"] for x in f] == [4, 3, 2, 2, 1, 1]
    # raw bytes before extraction, text bytes from extraction on, cleaned bytes from C4 on
    assert [x["bytes"] for x in f] == [350, 300, 80, 80, 30, 30]
    assert f[2]["dropped"] == 1 and f[2]["documents_in"] == 3


def test_broken_input_is_fully_accounted(tmp_path):
    """A WARC with a cut gzip member, non-HTML and request records, plus a JSONL with bad lines:
    the ledger has exactly one row per record, and read = kept + dropped."""
    rng = random.Random(4)
    recs = [{"type": "request", "url": "http://e.com/0"}]
    recs += [html_response(f"http://e.com/{i}", english_page(rng, f"P{i}")) for i in range(6)]
    recs += [html_response("http://e.com/de", german_page()),
             {"type": "response", "url": "http://e.com/x.css", "payload": b"body{}", "content_type": "text/css"}]
    warc = tmp_path / "in.warc.gz"
    offsets = write_warc(warc, recs)
    data = warc.read_bytes()
    cut = offsets[3] + (offsets[4] - offsets[3]) // 2  # record 3 loses its second half
    warc.write_bytes(data[:cut] + data[offsets[4]:])
    jl = tmp_path / "more.jsonl.gz"
    lines = [json.dumps({"text": "\n".join([english_page(rng)[100:900]] * 1)}), "{oops", json.dumps({"x": 1})]
    jl.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))

    out = tmp_path / "out"
    m = run_curate(CurateConfig(), {"data": [warc, jl]}, out)
    assert verify(out) == []
    ledger = pq.read_table(out / "ledger.parquet").to_pylist()
    assert len(ledger) == m.metrics["records_read"] == len(recs) + 3 + 0  # the cut record is one row
    assert len({(r["source"], r["offset"]) for r in ledger}) == len(ledger)  # no record twice
    assert m.metrics["kept"] + sum(m.metrics["dropped"].values()) == m.metrics["records_read"]
    reasons = Counter(r["reason"] for r in ledger if not r["kept"])
    assert reasons["request"] == 1 and reasons["non_html"] == 1 and reasons["bad_json"] == 1
    assert reasons["missing_text"] == 1 and reasons["truncated"] + reasons["malformed"] == 1
    assert reasons["language"] == 1  # the German page
    kept_rows = [r for r in ledger if r["kept"]]
    assert all(r["stage"] is None and r["reason"] is None for r in kept_rows)
    assert all(r["stage"] and r["reason"] for r in ledger if not r["kept"])
    docs = [json.loads(x) for x in gzip.open(out / "documents-00000.jsonl.gz", "rt")]
    assert [d["id"] for d in docs] == [r["id"] for r in kept_rows]
    assert read_manifest(out).metrics["dropped"] == dict(sorted(reasons.items()))
