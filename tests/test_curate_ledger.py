"""The ledger: one row per input record, read = kept + dropped, the funnel computed from it."""
from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import numpy as np
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


def _reference_accounting_and_funnel(rows: list[dict], steps: list[str]) -> tuple[dict, list[dict]]:
    """The per-row computation finalize used before it streamed (every row held, then counted)."""
    from gristmill.curate.ledger import STEPS

    read = kept = 0
    dropped, by_stage, flagged = Counter(), Counter(), Counter()
    for r in rows:
        read += 1
        if r["kept"]:
            kept += 1
            if r.get("reason"):
                flagged[r["reason"]] += 1
        else:
            dropped[r["reason"]] += 1
            by_stage[r["stage"]] += 1
    acc = {"records_read": read, "kept": kept, "dropped": dict(sorted(dropped.items())),
           "dropped_by_stage": {s: by_stage[s] for s in STEPS if by_stage[s]}, "flagged": dict(sorted(flagged.items()))}
    index = {s: i for i, s in enumerate(steps)}
    n = len(steps)
    docs, size = [0] * n, [0] * n
    extract_i = index.get("extract", 0)
    clean_i = index.get("c4", extract_i)
    raw_total = 0
    for r in rows:
        raw_total += r["bytes_raw"] or 0
        last = n if r["kept"] else index.get(r["stage"], 0)
        for i in range(last):
            docs[i] += 1
            size[i] += (r["bytes_raw"] if i < extract_i else r["bytes_text"] if i < clean_i else r["bytes_clean"]) or 0
    out = [{"step": "input", "documents": len(rows), "bytes": raw_total}]
    prev_docs, prev_bytes = len(rows), raw_total
    for i, s in enumerate(steps):
        out.append({"step": s, "documents": docs[i], "bytes": size[i], "documents_in": prev_docs,
                    "bytes_in": prev_bytes, "dropped": prev_docs - docs[i]})
        prev_docs, prev_bytes = docs[i], size[i]
    return acc, out


def test_streamed_tally_equals_the_per_row_computation():
    """ledger.Tally (what finalize counts as rows go by) gives the accounting and funnel of holding every row:
    kept, flagged (kept with a reason), dropped at every step, at a step the funnel leaves out, None sizes."""
    from gristmill.curate.ledger import STEPS, Tally

    rng = random.Random(12)
    stages = list(STEPS) + ["pending"]
    rows = []
    for i in range(3000):
        k = rng.random()
        size = dict(raw=rng.choice([None, rng.randrange(10_000)]), text=rng.choice([None, rng.randrange(5000)]),
                    clean=rng.choice([None, rng.randrange(4000)]))
        if k < 0.3:
            rows.append(_row(i, True, **size))
        elif k < 0.35:
            rows.append(_row(i, True, "decontaminate", rng.choice(["decontaminated", "flagged_x"]), **size))
        else:
            st = rng.choice(stages)
            rows.append(_row(i, False, st, f"{st}:{rng.randrange(3)}", **size))
    tally = Tally()
    for r in rows:
        tally.add(r)
    for steps in (list(STEPS), ["read", "extract", "langid", "c4", "near_dedup"], ["read", "langid", "exact_dedup"],
                  ["extract", "read"], []):
        acc, fun = _reference_accounting_and_funnel(rows, steps)
        assert tally.accounting() == acc == accounting(rows)
        assert tally.funnel(steps) == fun == funnel(rows, steps)
    acc = tally.accounting()
    assert acc["kept"] + sum(acc["dropped"].values()) == acc["records_read"] == len(rows)


def test_exact_key_runs_keep_the_first_seen():
    """finalize's exact dedup on (m, 4) uint64 keys equals a first-seen dict."""
    from gristmill.curate.finalize import _first_of_equal_keys

    rng = np.random.default_rng(3)
    pool = rng.integers(0, 2**63, size=(40, 4), dtype=np.int64).astype(np.uint64)
    pool[1, 1:] = pool[0, 1:]  # keys that differ in one word only
    keys = pool[rng.integers(0, 40, size=500)]
    first_seen: dict[bytes, int] = {}
    want = [first_seen.setdefault(k.tobytes(), i) for i, k in enumerate(keys)]
    assert _first_of_equal_keys(keys).tolist() == want
    assert _first_of_equal_keys(np.zeros((0, 4), np.uint64)).tolist() == []


def test_finalize_streams_ids_and_accounting(tmp_path):
    """A JSONL corpus with exact and near copies: duplicate_of / cluster name the kept document's id, the
    manifest's funnel equals the one computed from the published ledger, read = kept + dropped."""
    rng = random.Random(7)
    words = ("river market teacher garden village library engine report station family letter kitchen season "
             "window harbor bridge meeting museum forest doctor painter council student theater journey").split()

    def text() -> str:
        return "\n\n".join(" ".join(f"The {rng.choice(words)} and the {rng.choice(words)} visited a "
                                    f"{rng.choice(words)} near the {rng.choice(words)} with {rng.choice(words)}."
                                    for _ in range(5)) for _ in range(2))

    docs = [text() for _ in range(40)]
    docs += [docs[3], docs[10], docs[3]]  # exact copies
    near = docs[20].split(" ")
    near[5] = "orchard"
    docs.append(" ".join(near))
    jl = tmp_path / "in.jsonl"
    jl.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)) + "{bad\n")
    out = tmp_path / "out"
    m = run_curate(CurateConfig(), {"data": [jl]}, out)
    rows = list(iter_ledger(out / "ledger.parquet"))
    by_id = {r["id"]: r for r in rows}
    assert m.metrics["records_read"] == len(rows) == len(docs) + 1
    assert m.metrics["kept"] + sum(m.metrics["dropped"].values()) == m.metrics["records_read"]
    for copy, src in ((40, 3), (41, 10), (42, 3)):  # a source the heuristics dropped takes its copy along
        want = f"d{src}" if by_id[f"d{src}"]["kept"] else None
        assert by_id[f"d{copy}"]["duplicate_of"] == want
        assert by_id[f"d{copy}"]["reason"] == ("exact_duplicate" if want else by_id[f"d{src}"]["reason"])
    assert any(by_id[f"d{c}"]["duplicate_of"] for c in (40, 41, 42))
    assert by_id["d43"]["reason"] == "near_duplicate" and by_id["d43"]["duplicate_of"] == "d20"
    assert by_id["d43"]["cluster"] == by_id["d20"]["cluster"] == "d20" and by_id["d20"]["kept"]
    from gristmill.curate.finalize import active_steps

    steps = [f["step"] for f in m.metrics["funnel"]][1:]
    assert steps == active_steps(CurateConfig(), {})
    assert m.metrics["funnel"] == [{k: f[k] for k in ("step", "documents", "bytes")} for f in funnel(rows, steps)]
    assert 0 < m.metrics["dedup_index"]["documents"] <= len(docs) and m.metrics["dedup_index"]["bytes"] > 0
