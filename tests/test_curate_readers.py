"""Curate readers: every record of WARC / WET / JSONL / Parquet / .html inputs becomes one Record,
documents with their text and everything else with a reason (never an exception, never a skip)."""
from __future__ import annotations

import gzip
import json
import random
import uuid
from pathlib import Path

import pytest
from curate_fixtures import english_page, html_response, write_warc

from gristmill.curate import CurateError
from gristmill.curate.config import ReadersConfig
from gristmill.curate.readers import (TaskUnit, decode_html, detect_format, plan_units, read_html_file, read_jsonl,
                                      read_parquet, read_unit, read_warc)

CFG = ReadersConfig()


def _warc_mixture(tmp_path: Path, gz: bool = True) -> tuple[Path, list[int]]:
    rng = random.Random(0)
    russian = "<html><head><title>Новости</title></head><body><p>Привет, мир! Это страница в кодировке cp1251.</p></body></html>"
    records = [
        {"type": "request", "url": "http://example.com/a"},
        html_response("http://example.com/a", english_page(rng, "A")),
        {"type": "response", "url": "http://example.com/img.png", "payload": b"\x89PNG....", "content_type": "image/png"},
        html_response("http://example.com/ru", russian, charset="windows-1251"),
        html_response("http://example.com/gone", "<html><body>Not found</body></html>", status="404 Not Found"),
        {"type": "revisit", "url": "http://example.com/a"},
        {"type": "metadata", "url": "http://example.com/a", "payload": b"fetchTimeMs: 12\r\n"},
        {"type": "response", "url": "http://example.com/empty", "payload": b"", "content_type": "text/html"},
        # no Content-Type: sniffed from the payload
        {"type": "response", "url": "http://example.com/sniff", "payload": english_page(rng, "S").encode()},
    ]
    path = tmp_path / ("mix.warc.gz" if gz else "mix.warc")
    return path, write_warc(path, records, gz=gz)


@pytest.mark.parametrize("gz", [True, False])
def test_warc_records_get_documents_or_reasons(tmp_path, gz):
    path, offsets = _warc_mixture(tmp_path, gz)
    recs = list(read_warc(str(path), CFG))
    got = [(r.record_type, r.drop) for r in recs]
    assert got == [("request", "request"), ("response", None), ("response", "non_html"), ("response", None),
                   ("response", "http_status"), ("revisit", "revisit"), ("metadata", "metadata"),
                   ("response", "empty"), ("response", None)]
    assert [r.offset for r in recs] == offsets  # byte offsets of the records in the file
    page = recs[1]
    assert page.is_html and "<article>" in page.content and page.url == "http://example.com/a"
    assert page.id.startswith("<urn:uuid:")
    ru = recs[3]
    assert "Привет, мир!" in ru.content and ru.meta["encoding"] == "windows-1251"  # declared charset used
    assert recs[2].detail == "image/png" and recs[4].detail == "404"
    assert recs[8].is_html  # HTML without a Content-Type header is recognised by its markup


def test_truncated_gzip_members_become_rows_and_reading_goes_on(tmp_path):
    rng = random.Random(1)
    recs = [html_response(f"http://e.com/{i}", english_page(rng, f"P{i}")) for i in range(4)]
    path = tmp_path / "x.warc.gz"
    offsets = write_warc(path, recs)
    data = path.read_bytes()
    # cut record 1 in half (its gzip member ends early) and the last record too
    broken = data[: offsets[1] + (offsets[2] - offsets[1]) // 2] + data[offsets[2]: offsets[3] + 40]
    bad = tmp_path / "broken.warc.gz"
    bad.write_bytes(broken)
    out = list(read_warc(str(bad), CFG))
    kinds = [(r.offset, r.drop) for r in out]
    assert kinds[0] == (0, None)
    assert kinds[1][0] == offsets[1] and kinds[1][1] in ("truncated", "malformed")
    shift = (offsets[2] - offsets[1]) - (offsets[2] - offsets[1]) // 2
    assert kinds[2] == (offsets[2] - shift, None)  # record 2 is found again after the broken member
    assert kinds[3][1] == "truncated" and kinds[3][0] == offsets[3] - shift
    assert len(out) == 4  # one row per record: nothing lost, nothing doubled


def test_uncompressed_warc_cut_inside_a_record(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "x.warc"
    offsets = write_warc(path, [html_response(f"http://e.com/{i}", english_page(rng)) for i in range(3)], gz=False)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[2] + (len(data) - offsets[2]) // 2])
    out = list(read_warc(str(path), CFG))
    assert [r.drop for r in out] == [None, None, "truncated"]
    assert out[2].offset == offsets[2]


def test_warc_0_18_with_malformed_date_and_euc_jp(tmp_path):
    # ClueWeb09 style: WARC/0.18, a date that is not ISO 8601, payload in EUC-JP declared by HTTP header
    body = "<html><head><title>日本語</title></head><body><p>これは日本語のページです。</p></body></html>".encode("euc-jp")
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=EUC-JP\r\n\r\n" + body
    members = []
    for i in range(2):
        head = (f"WARC/0.18\r\nWARC-Type: response\r\nWARC-Target-URI: http://jp.example/{i}\r\n"
                f"WARC-Date: 2009-03-65T08:43:19-0800\r\nWARC-Record-ID: <urn:uuid:{uuid.UUID(int=i)}>\r\n"
                f"Content-Type: application/http;msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
        members.append(gzip.compress(head + http + b"\r\n\r\n", mtime=0))
    path = tmp_path / "clueweb.warc.gz"
    path.write_bytes(b"".join(members))
    out = list(read_warc(str(path), CFG))
    assert [r.drop for r in out] == [None, None]
    assert "日本語のページ" in out[0].content and out[1].url == "http://jp.example/1"
    assert out[1].offset == len(members[0])


def test_wet_conversion_records_are_plain_text(tmp_path):
    path = tmp_path / "x.warc.wet.gz"
    write_warc(path, [{"type": "conversion", "url": "http://e.com/t", "payload": "Plain words here.\nMore.".encode()}])
    [rec] = list(read_warc(str(path), CFG))
    assert rec.drop is None and not rec.is_html and rec.content.startswith("Plain words")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_with_custom_text_field_and_bad_lines(tmp_path, suffix):
    lines = [json.dumps({"body": "first text", "id": "a", "url": "http://a"}), "{not json",
             json.dumps({"other": 1}), "", json.dumps({"body": "second", "metadata": {"url": "http://b"}}),
             json.dumps(["a", "list"])]
    raw = ("\n".join(lines) + "\n").encode()
    path = tmp_path / f"docs{suffix}"
    if suffix.endswith(".gz"):
        raw = gzip.compress(raw)
    elif suffix.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(raw)
    out = list(read_jsonl(str(path), ReadersConfig(text_field="body")))
    assert [(r.offset, r.drop) for r in out] == [(1, None), (2, "bad_json"), (3, "missing_text"), (5, None),
                                                  (6, "bad_json")]
    assert out[0].id == "a" and out[0].url == "http://a" and out[0].content == "first text"
    assert out[3].id == f"docs{suffix}:5" and out[3].url == "http://b"


def test_truncated_jsonl_gz_gives_one_truncated_row(tmp_path):
    raw = gzip.compress(("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(200))).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(raw[: len(raw) // 2])
    out = list(read_jsonl(str(path), CFG))
    assert out[-1].drop == "truncated" and all(r.drop is None for r in out[:-1])
    assert out[-1].offset == len(out)  # the line number where reading stopped


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["alpha text", None, "  "], "id": ["x", "y", "z"]}), path)
    out = list(read_parquet(str(path), ReadersConfig(text_field="content")))
    assert [(r.id, r.offset, r.drop) for r in out] == [("x", 0, None), ("y", 1, "missing_text"), ("z", 2, "empty")]
    with pytest.raises(CurateError, match="no column 'text'"):
        list(read_parquet(str(path), CFG))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    [bad] = list(read_parquet(str(tmp_path / "broken.parquet"), CFG))
    assert bad.drop == "unreadable_file"


def test_html_folder_units_and_charsets(tmp_path):
    folder = tmp_path / "site"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / f"p{i}.html").write_text(english_page(random.Random(i)), encoding="utf-8")
    latin = "<html><head><meta charset='iso-8859-1'></head><body><p>Café crème à la carte</p></body></html>"
    (folder / "sub" / "latin.htm").write_bytes(latin.encode("iso-8859-1"))
    (folder / ".hidden.html").write_text("<html></html>")
    units = plan_units([folder], ReadersConfig(html_files_per_task=4))
    assert [u.format for u in units] == ["html", "html"] and [len(u.paths) for u in units] == [4, 2]
    recs = [r for u in units for r in read_unit(u, CFG)]
    assert len(recs) == 6 and all(r.drop is None and r.is_html for r in recs)
    latin_rec = read_html_file(str(folder / "sub" / "latin.htm"), str(folder), CFG)
    assert latin_rec.id == "sub/latin.htm" and "Café crème" in latin_rec.content


def test_plan_units_formats_and_unknown_files(tmp_path):
    (tmp_path / "a.warc.gz").write_bytes(gzip.compress(b"WARC/1.0\r\n"))
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "c.dat").write_bytes(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n")  # sniffed
    units = plan_units([tmp_path / "a.warc.gz", tmp_path / "b.jsonl", tmp_path / "c.dat"], CFG)
    assert [u.format for u in units] == ["warc", "jsonl", "warc"]
    assert detect_format(tmp_path / "c.dat") == "warc"
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(CurateError, match="junk.bin"):
        plan_units([tmp_path], CFG)
    with pytest.raises(CurateError, match="does not exist"):
        plan_units([tmp_path / "missing.warc"], CFG)


def test_decode_html_order():
    assert decode_html("naïve".encode("utf-8")) == ("naïve", "utf-8")
    text, enc = decode_html("<meta charset=koi8-r><p>Привет</p>".encode("koi8-r"))
    assert "Привет" in text and enc == "koi8-r"
    # mostly valid UTF-8 with one stray byte: accepted with a replacement character
    text, enc = decode_html(("ok " * 500).encode() + b"\xff")
    assert enc == "utf-8-replace" and text.endswith("\ufffd")


def test_read_unit_dispatches(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "hello"}\n')
    [r] = list(read_unit(TaskUnit("jsonl", (str(p),)), CFG))
    assert r.content == "hello" and r.record_type == "jsonl"


@pytest.mark.parametrize("gz", [True, False])
def test_big_warc_read_in_byte_ranges_gives_every_record_once(tmp_path, gz):
    rng = random.Random(9)
    recs = []
    for i in range(40):
        recs.append({"type": "request", "url": f"http://e.com/{i}"})
        recs.append(html_response(f"http://e.com/{i}", english_page(rng, f"P{i}", paragraphs=1 + i % 3)))
    path = tmp_path / ("big.warc.gz" if gz else "big.warc")
    offsets = write_warc(path, recs, gz=gz)
    if gz:  # one broken member in the middle
        data = path.read_bytes()
        path.write_bytes(data[: offsets[31] + 30] + data[offsets[32]:])
    whole = [(r.offset, r.id, r.drop) for r in read_warc(str(path), CFG)]
    units = plan_units([path], CFG, split_bytes=path.stat().st_size // 7)
    assert len(units) >= 5 and units[0].start == 0 and units[-1].end is None
    assert all(a.end == b.start for a, b in zip(units, units[1:]))
    parts = [(r.offset, r.id, r.drop) for u in units for r in read_unit(u, CFG)]
    assert parts == whole and len(whole) == 80
    assert plan_units([path], CFG, split_bytes=0) == [TaskUnit("warc", (str(path),))]


def test_a_parquet_file_without_the_text_column_stops_the_stage_before_any_task(tmp_path, capfd):
    """The clear message, and no worker traceback before it: the columns are checked before tasks start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gristmill.cli import main

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["alpha text"], "id": ["x"]}), path)
    assert main(["curate", "--input", str(path), "--out", str(tmp_path / "out"), "--set", "curate.workers=2"]) == 1
    err = capfd.readouterr().err
    assert "no column 'text' (columns: content, id)" in err and "curate.readers.text_field" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "_work").exists() or not any((tmp_path / "out" / "_work").rglob("*.jsonl"))
