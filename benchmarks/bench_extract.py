"""Boilerplate removal: gristmill's extraction vs trafilatura's configurations, F1 and pages/s side by side.

    .venv/bin/python benchmarks/bench_extract.py [--data ../shared/data/boilerplate/trafilatura_eval]
        [--rounds 3] [--pages 0] [--web ../shared/data/web]

Pages: trafilatura's multilingual evaluation set (evaldata.json + html.tar.gz, 990 pages; the tarball
is unpacked into a temporary folder). Every page is decoded once with gristmill's own HTML decoding
(`readers.decode_html`: UTF-8, declared charset, cchardet), and every side gets the same str.

Sides, each called as a user would call it:

  gristmill                  Extractor(ExtractionConfig()).extract: trafilatura fast=True, then its full path
                             where the fast result is poor (short, and a small share of the page's text)
  gristmill full path        the same with fast_first=False: the full path on every page (the old default)
  trafilatura default        trafilatura.extract(html)
  trafilatura no comments    trafilatura.extract(html, include_comments=False)
  trafilatura fast           trafilatura.extract(html, fast=True)

F1 is trafilatura's own evaluation (tests/comparison.py, evaluate_result / calculate_scores): for each
page, every "with" snippet found verbatim (substring) in the output is a true positive, else a false
negative; every "without" snippet found is a false positive, else a true negative; an empty output
(None) counts all "with" as false negatives and all "without" as true negatives. Counts are summed
over all pages; precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 P R / (P + R).

Speed: --rounds rounds; in each, every page goes through every side, the order of the sides rotated
page by page, so load from other processes on a shared machine falls on all sides alike; a side's
pages/s is pages / its summed CPU seconds of this process (time.process_time: on a shared, busy
machine wall time mostly measures the other processes) in that round (a new gristmill Extractor each
round, so its identical-page cache never answers a page seen in an earlier round); its summed wall
seconds (perf_counter) are kept beside them. Printed: each round's CPU and wall pages/s per side, each
side's median pages/s (CPU and wall), and the median (min-max) over rounds of gristmill's pages/s /
each other side's, for CPU and for wall time.

Language prefilter (curate.langid.prefilter): its cost per page (long text runs + fastText, as the
curate pipeline runs it), the pages it drops, the extraction time those drops save (gristmill's time
on them), and false drops (pages whose extracted text the post-extraction language ID would keep), on
the evaluation pages and on the HTML pages of the real WARC files in --web (Common Crawl excerpts,
ClueWeb09-ja, Dolma's wget sample, pywb test WARCs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gristmill.curate.config import ExtractionConfig, LangIdConfig, ReadersConfig  # noqa: E402
from gristmill.curate.extract import Extractor  # noqa: E402
from gristmill.curate.langid import (LanguageIdentifier, language_verdict, long_text_runs,  # noqa: E402
                                     prefilter_verdict)
from gristmill.curate.readers import decode_html, read_warc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "boilerplate" / "trafilatura_eval"
DEFAULT_WEB = REPO.parent / "shared" / "data" / "web"


def load_pages(data: Path, tmp: Path, limit: int) -> tuple[list[str], list[dict]]:
    ev = json.loads((data / "evaldata.json").read_text(encoding="utf-8"))
    with tarfile.open(data / "html.tar.gz") as t:
        t.extractall(tmp, filter="data")
    htmls, items = [], []
    for item in ev.values():
        path = next((p for p in (tmp / "cache" / item["file"], tmp / "eval" / item["file"]) if p.is_file()), None)
        if path is None:
            continue
        text, _ = decode_html(path.read_bytes())
        htmls.append(text or "")
        items.append(item)
        if limit and len(htmls) >= limit:
            break
    return htmls, items


def snippet_scores(outputs: list[str | None], items: list[dict]) -> dict:
    """trafilatura's with/without snippet evaluation (see the module docstring)."""
    tp = fn = fp = tn = 0
    for out, item in zip(outputs, items):
        if out is None:
            fn += len(item["with"])
            tn += len(item["without"])
            continue
        for s in item["with"]:
            tp, fn = (tp + 1, fn) if s in out else (tp, fn + 1)
        for s in item["without"]:
            fp, tn = (fp + 1, tn) if s in out else (fp, tn + 1)
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-12, p + r)}


def sides(ours: Extractor, ours_full: Extractor) -> dict:
    import trafilatura

    def mine(ex):
        return lambda html: ex.extract(html)[0] if html else None

    return {
        "gristmill": mine(ours),
        "gristmill full path": mine(ours_full),
        "trafilatura default": lambda html: trafilatura.extract(html) if html else None,
        "trafilatura no comments": lambda html: trafilatura.extract(html, include_comments=False) if html else None,
        "trafilatura fast": lambda html: trafilatura.extract(html, fast=True) if html else None,
    }


def run_round(htmls: list[str], rnd: int) -> tuple[dict, dict, dict, list[float], Extractor]:
    """One round: (CPU seconds per side, wall seconds per side, outputs per side, gristmill's CPU seconds per
    page, the gristmill Extractor)."""
    ours = Extractor(ExtractionConfig())
    fns = sides(ours, Extractor(ExtractionConfig(fast_first=False)))
    names = list(fns)
    seconds = {k: 0.0 for k in names}
    wall = {k: 0.0 for k in names}
    outputs = {k: [] for k in names}
    ours_times = []
    for i, html in enumerate(htmls):
        k0 = (i + rnd) % len(names)
        for name in names[k0:] + names[:k0]:
            w0, t0 = time.perf_counter(), time.process_time()
            out = fns[name](html)
            dt = time.process_time() - t0
            wall[name] += time.perf_counter() - w0
            seconds[name] += dt
            outputs[name].append(out)
            if name == "gristmill":
                ours_times.append(dt)
    return seconds, wall, outputs, ours_times, ours


def web_pages(web: Path) -> list[str]:
    pages = []
    for p in sorted(web.iterdir()):
        if ".warc" in p.name and not p.name.endswith((".wat", ".wet", ".wat.gz", ".wet.gz")):
            pages += [r.content for r in read_warc(str(p), ReadersConfig()) if r.drop is None and r.is_html]
    return pages


def prefilter_report(label: str, htmls: list[str], extract_seconds: list[float], lid: LanguageIdentifier,
                     cfg: LangIdConfig, outputs: list[str | None]) -> None:
    """The pre-extraction language check as the pipeline runs it, timed page by page."""
    cost, dropped, saved, false_drops = 0.0, 0, 0.0, 0
    post = lid.predict([o or "" for o in outputs])
    for html, sec, (plang, pscore) in zip(htmls, extract_seconds, post):
        t0 = time.process_time()
        rough = long_text_runs(html)
        keep = True
        if len(rough) >= cfg.prefilter_min_chars:
            [(lang, score)] = lid.predict([rough])
            keep, _ = prefilter_verdict(lang, score, len(rough), cfg.languages, cfg.prefilter_min_score,
                                        cfg.prefilter_min_chars)
        cost += time.process_time() - t0
        if not keep:
            dropped += 1
            saved += sec
            false_drops += language_verdict(plang, pscore, cfg.languages, cfg.min_score)[0]
    n = max(1, len(htmls))
    print(f"  {label:<34} {len(htmls):5d} pages  cost {1e3 * cost / n:6.2f} ms/page  dropped {dropped:4d} "
          f"({dropped / n:6.1%})  extraction saved {1e3 * saved / n:6.2f} ms/page  net "
          f"{1e3 * (saved - cost) / n:+7.2f} ms/page  false drops {false_drops}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--web", type=Path, default=DEFAULT_WEB)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=0, help="only the first N evaluation pages (0 = all)")
    a = ap.parse_args()
    if not (a.data / "evaldata.json").is_file():
        raise SystemExit(f"{a.data}: no evaldata.json / html.tar.gz; pass --data PATH")
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as td:
        htmls, items = load_pages(a.data, Path(td), a.pages)
    print(f"pages: {len(htmls)} of trafilatura's evaluation set ({sum(not h for h in htmls)} undecodable), "
          f"{sum(len(h) for h in htmls) / 1e6:.1f} M characters of HTML; rounds: {a.rounds}", flush=True)
    Extractor(ExtractionConfig()).extract(htmls[0])  # warm-up: imports, jusText stoplists

    per_round, wall_round, first_outputs, ours_times, fallbacks = [], [], None, None, 0
    for rnd in range(a.rounds):
        seconds, wall, outputs, times, ours = run_round(htmls, rnd)
        per_round.append(seconds)
        wall_round.append(wall)
        if first_outputs is None:
            first_outputs, ours_times, fallbacks = outputs, times, ours.fallbacks
        print(f"round {rnd + 1}: " + ", ".join(f"{k} {len(htmls) / s:.1f} ({len(htmls) / wall[k]:.1f} wall)"
                                               for k, s in seconds.items()) + " pages/s", flush=True)

    names = list(per_round[0])
    print(f"\n{'side':<26}{'precision':>10}{'recall':>8}{'F1':>8}{'pages/s':>10}{'wall':>8}")
    for name in names:
        sc = snippet_scores(first_outputs[name], items)
        pps = statistics.median(len(htmls) / r[name] for r in per_round)
        wps = statistics.median(len(htmls) / r[name] for r in wall_round)
        print(f"{name:<26}{sc['precision']:>10.4f}{sc['recall']:>8.4f}{sc['f1']:>8.4f}{pps:>10.1f}{wps:>8.1f}")
    print(f"gristmill took the full path on {fallbacks} of {len(htmls)} pages ({fallbacks / len(htmls):.1%})")
    print("\nspeed ratio gristmill / other, median (min-max) over rounds, CPU time and wall time:")
    for name in names[1:]:
        ratios = [r[name] / r["gristmill"] for r in per_round]
        walls = [r[name] / r["gristmill"] for r in wall_round]
        print(f"  vs {name:<24} CPU {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})   "
              f"wall {statistics.median(walls):.2f}x ({min(walls):.2f}-{max(walls):.2f})")
    fast = [r["trafilatura fast"] / r["gristmill"] for r in per_round]
    f1_ours = snippet_scores(first_outputs["gristmill"], items)["f1"]
    f1_full = snippet_scores(first_outputs["gristmill full path"], items)["f1"]
    print(f"target: >= trafilatura fast's pages/s ({statistics.median(fast):.2f}x: "
          f"{'PASS' if statistics.median(fast) >= 1 else 'FAIL'}) with the full path's F1 "
          f"({f1_ours:.4f} vs {f1_full:.4f}: {'PASS' if f1_ours >= f1_full - 0.001 else 'FAIL'})")

    # -- the pre-extraction language check -----------------------------------------------------
    cfg = LangIdConfig()
    lid = LanguageIdentifier()
    lid.predict(["warm up"])
    print(f"\nlanguage prefilter (keep {cfg.languages}; drop at score >= {cfg.prefilter_min_score} with >= "
          f"{cfg.prefilter_min_chars} characters of long text runs), against gristmill's extraction time:")
    prefilter_report("trafilatura evaluation pages", htmls, ours_times, lid, cfg, first_outputs["gristmill"])
    if a.web.is_dir():
        wp = web_pages(a.web)
        ex = Extractor(ExtractionConfig(reuse_identical=False))
        best = [float("inf")] * len(wp)
        outs = [None] * len(wp)
        for _ in range(a.rounds):
            for i, html in enumerate(wp):
                t0 = time.process_time()
                outs[i] = ex.extract(html)[0]
                best[i] = min(best[i], time.process_time() - t0)
        prefilter_report(f"HTML pages of {a.web.name}/*.warc*", wp, best, lid, cfg, outs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
