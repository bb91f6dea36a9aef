"""URL blocklists: datatrove's bundled lists drop a listed domain offline, a user's domain list drops its
domain, clean URLs and records without a URL are kept, input = kept + dropped."""
from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest

from curate_fixtures import english_page, html_response, write_warc
from gristmill.curate import CurateError
from gristmill.curate.config import CurateConfig, UrlFilterConfig
from gristmill.curate.ledger import iter_ledger
from gristmill.curate.run import run_curate

LISTED = "https://www.0-800-email.com/inbox"  # a domain of datatrove's bundled UT1 list; no banned word in the URL


def _dump(path: Path, urls: list[str]) -> Path:
    rng = random.Random(7)
    write_warc(path, [html_response(u, english_page(rng, f"Page {i}")) for i, u in enumerate(urls)])
    return path


def _rows(out: Path) -> dict[str, dict]:
    return {r["url"]: r for r in iter_ledger(out / "ledger.jsonl.gz") if r["url"]}


def _no_network(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("curate tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_bundled_blocklist_drops_a_listed_domain_offline(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    warc = _dump(tmp_path / "in.warc.gz", [LISTED, "https://news.example.org/2024/river-walk"])
    m = run_curate(CurateConfig(ledger_format="jsonl.gz"), {"data": [warc]}, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    blocked = rows[LISTED]
    assert (blocked["kept"], blocked["stage"], blocked["reason"]) == (False, "url_filter", "url_blocklist")
    assert blocked["detail"] == "domain: www.0-800-email.com"
    assert rows["https://news.example.org/2024/river-walk"]["kept"]
    assert m.metrics["dropped"]["url_blocklist"] == 1
    assert m.metrics["records_read"] == m.metrics["kept"] + sum(m.metrics["dropped"].values())
    assert "url_filter" in [f["step"] for f in m.metrics["funnel"]]
    assert len(m.metrics["model_files"]["url_blocklist"]["sha256"]) == 64  # the list's version is recorded

    # the same dump with the filter off keeps the page: the drop above is the filter's
    off = run_curate(CurateConfig(ledger_format="jsonl.gz", url_filter=UrlFilterConfig(enabled=False)),
                     {"data": [warc]}, tmp_path / "off")
    assert _rows(tmp_path / "off")[LISTED]["kept"] and "url_blocklist" not in off.metrics["dropped"]


def test_user_domain_and_url_lists(tmp_path):
    urls = ["https://blocked-by-me.com/a", "https://shop.blocked-by-me.com/b", "https://not-blocked-by-me.com/c",
            "http://fine.example.net/only/this/page/", "https://fine.example.net/other", "https://clean.example.org/x"]
    warc = _dump(tmp_path / "in.warc.gz", urls)
    (tmp_path / "domains.txt").write_text("# my list\nblocked-by-me.com\n\n")
    cfg = CurateConfig(ledger_format="jsonl.gz", url_filter=UrlFilterConfig(
        integrated_lists=False, domain_files=[str(tmp_path / "domains.txt")],
        urls=["https://fine.example.net/only/this/page"]))
    m = run_curate(cfg, {"data": [warc]}, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    dropped = {u for u, r in rows.items() if r["reason"] == "url_blocklist"}
    assert dropped == {urls[0], urls[1], urls[3]}  # the domain, its subdomain, the listed URL (scheme, '/' ignored)
    assert all(rows[u]["kept"] for u in (urls[2], urls[4], urls[5]))
    assert rows[urls[1]]["detail"] == "domain: shop.blocked-by-me.com" and rows[urls[3]]["detail"].startswith("url:")
    assert m.metrics["records_read"] == m.metrics["kept"] + sum(m.metrics["dropped"].values())
    assert "url_filter.domain_files[0]" in m.metrics["model_files"]


def test_records_without_a_url_pass(tmp_path):
    rng = random.Random(3)
    from curate_fixtures import english_paragraph

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": "\n".join(english_paragraph(rng) for _ in range(4))})
                            + "\n" for i in range(2)))
    cfg = CurateConfig(ledger_format="jsonl.gz", url_filter=UrlFilterConfig(domains=["example.com"]))
    m = run_curate(cfg, {"data": [data]}, tmp_path / "out")
    assert m.metrics["kept"] == 2 and "url_blocklist" not in m.metrics["dropped"]


def test_list_errors_name_the_field(tmp_path):
    warc = _dump(tmp_path / "in.warc.gz", ["https://clean.example.org/x"])
    missing = tmp_path / "nope.txt"
    cfg = CurateConfig(url_filter=UrlFilterConfig(integrated_lists=False, url_files=[str(missing)]))
    with pytest.raises(CurateError, match=r"curate\.url_filter\.url_files: .*nope\.txt: no such file"):
        run_curate(cfg, {"data": [warc]}, tmp_path / "out")
    with pytest.raises(ValueError, match=r"curate\.url_filter\.domains: 'https://x\.com/a' is not a domain"):
        UrlFilterConfig(domains=["https://x.com/a"])
    with pytest.raises(ValueError, match=r"curate\.url_filter\.soft_word_threshold=0"):
        UrlFilterConfig(soft_word_threshold=0)
