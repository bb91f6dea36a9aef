"""Curation throughput and memory: gristmill's curate stage vs datatrove's own equivalent pipeline.

Same input for both: the real WARCs in shared/data/web, the trafilatura evaluation pages
(shared/data/boilerplate/trafilatura_eval/html.tar.gz, packed into one WARC of response records)
and a generated demo dump (--pages, default 2000). Same workers for both.

  datatrove: WarcReader -> Trafilatura -> LanguageFilter(en, 0.65, local lid.176) -> GopherRepetition
             -> GopherQuality -> JsonlWriter -> MinhashDedupSignature; MinhashDedupBuckets;
             MinhashDedupCluster; JsonlReader -> MinhashDedupFilter -> JsonlWriter
  gristmill: run_curate with the default CurateConfig (it also runs C4 and FineWeb filters, exact
             dedup, and writes the ledger, stats and report)

Each side runs in its own child process; peak RSS is the sum over that process tree, sampled every
50 ms. The two sides run in --rounds rounds (default 3), datatrove first in odd rounds and gristmill
first in even ones (the machine is shared: one pass each has given 0.55x and 1.11x minutes apart);
each round prints both sides' wall seconds and CPU seconds (getrusage, user + system, of the child and
every process under it: this process adopts the orphans, such as gristmill's forkserver pool, and reaps
them), then the median (min-max) over rounds of datatrove / gristmill
for wall time and for CPU time. Kept-set quality is measured on the demo part (the first round's run)
against the generator's ground truth. Then:
memory flatness (ours on N and 10 N demo pages) and the trafilatura with/without snippet evaluation
(evaldata.json) of our extraction vs plain `trafilatura.extract`.

datatrove's WarcReader and LanguageFilter require python-magic and fasteners, which gristmill does not
install: the datatrove side runs with those two dependency checks skipped, a small `magic` stand-in
(HTML sniffing; only used for records without WARC-Identified-Payload-Type), the local lid.176.ftz,
gristmill's offline word tokenizer (datatrove's default needs spaCy) and sha1 hashing (no xxhash).

    .venv/bin/python benchmarks/bench_curate.py [--data ../shared/data] [--pages 2000] [--workers 2] [--rounds 3]

--scale: memory independent of the corpus size. Generates short synthetic English JSONL documents (no
shared data needed; shards of 50 000 documents, 2.5 % exact and 2.5 % near copies of earlier documents),
curates 100 k and 1 M of them (default CurateConfig, each run in a fresh child process, peak RSS summed
over its process tree) and prints peak RSS, their ratio, the dedup index (bytes/document x 1 M), docs/s
and docs per CPU-second of the process tree (the throughput to compare on a machine shared with other work).
Target: RSS(1 M) <= 1.3 x RSS(100 k) + the 1 M run's dedup index; docs/s at 1 M not below 100 k's.

    .venv/bin/python benchmarks/bench_curate.py --scale [--scale-docs 100000,1000000] [--workers 2]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from interleave import (adopt_orphans, children_cpu_s, reap_orphans, round_order,  # benchmarks/interleave.py
                        spread)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------
# inputs


def pack_html_as_warc(tar_path: Path, out: Path, tmp: Path) -> tuple[Path, Path, int]:
    """Extract the eval HTML to tmp/html and write every page as a WARC response record."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    html_dir = tmp / "html"
    html_dir.mkdir(exist_ok=True)
    with tarfile.open(tar_path) as t:
        t.extractall(html_dir, filter="data")
    files = sorted(p for p in html_dir.rglob("*") if p.is_file())
    with open(out, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for p in files:
            rel = p.relative_to(html_dir).as_posix()
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            rec = w.create_warc_record(f"file:///{quote(rel)}", "response", payload=io.BytesIO(p.read_bytes()),
                                       http_headers=http)
            w.write_record(rec)
    return out, html_dir, len(files)


def without_broken_tail(warc: Path, out: Path) -> Path:
    """A copy of the demo WARC without its deliberately truncated last record: datatrove's WarcReader
    raises EOFError on it and the whole datatrove job stops (gristmill reads the original)."""
    from gristmill.curate.config import ReadersConfig
    from gristmill.curate.readers import read_warc

    cut = [r.offset for r in read_warc(str(warc), ReadersConfig()) if r.drop in ("truncated", "malformed")]
    data = warc.read_bytes()
    out.write_bytes(data[: cut[0]] if cut else data)
    return out


def real_warcs(data: Path) -> list[Path]:
    return sorted(p for p in (data / "web").iterdir() if ".warc" in p.name and not p.name.endswith(".txt"))


# ------------------------------------------------------------------------------------------------
# the two pipelines (each runs in a child process: `--run ours|datatrove`)


def run_ours(inputs: list[Path], out: Path, workers: int, ids: bool = True) -> dict:
    """ids False (--scale): return the kept count only; the kept ids (a Python string each) would be part
    of the child's peak RSS being measured."""
    from gristmill.curate.config import CurateConfig
    from gristmill.curate.run import run_curate

    t0 = time.perf_counter()
    m = run_curate(CurateConfig(workers=workers), {"data": inputs}, out, force=True)
    wall = time.perf_counter() - t0
    if not ids:
        return {"wall_s": wall, "records_read": m.metrics["records_read"], "kept": m.metrics["kept"],
                "dedup_index": m.metrics["dedup_index"], "dropped": m.metrics["dropped"]}
    kept = []
    for o in m.outputs:
        if o.kind == "documents":
            with gzip.open(out / o.path, "rt", encoding="utf-8") as f:
                kept += [json.loads(line)["id"] for line in f]
    return {"wall_s": wall, "records_read": m.metrics["records_read"], "kept_ids": kept,
            "dedup_index": m.metrics["dedup_index"], "dropped": m.metrics["dropped"]}


def _datatrove_shims() -> None:
    """Skip datatrove's python-magic / fasteners checks and stand in for `magic` (see module docstring)."""
    import types

    import datatrove.pipeline.base as dtbase

    real_check = dtbase.check_required_dependencies

    def check(step, deps):
        names = ("magic", "fasteners")
        real_check(step, [d for d in deps if (d[0] if isinstance(d, tuple) else d) not in names])

    dtbase.check_required_dependencies = check
    magic = types.ModuleType("magic")

    def from_buffer(buf: bytes, mime: bool = True) -> str:
        from gristmill.curate.readers import looks_like_html

        return "text/html" if looks_like_html(buf) else "application/octet-stream"

    magic.from_buffer = from_buffer
    sys.modules["magic"] = magic


def run_datatrove(inputs: list[Path], out: Path, workers: int, timeout: float) -> dict:
    _datatrove_shims()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.lid import FT176LID

    from gristmill.curate.heuristics import OfflineWordTokenizer
    from gristmill.curate.langid import default_model_path

    class LocalFT176(FT176LID):
        """datatrove's fastText LID with the local lid.176.ftz instead of a download."""

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(str(default_model_path()))
            return self._model

    folder = out / "input"
    folder.mkdir(parents=True)
    for i, p in enumerate(inputs):
        os.symlink(p.resolve(), folder / f"{i:03d}-{p.name}")
    tok = OfflineWordTokenizer()
    mh = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model = LocalFT176(["en"])
    n = len(inputs)
    logs = out / "logs"

    def ex(pipeline, tasks, name, w=workers):
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(w, tasks), logging_dir=str(logs / name),
                                     start_method="fork")

    stage1 = ex([WarcReader(str(folder)), Trafilatura(timeout=timeout), lang,
                 GopherRepetitionFilter(language=tok), GopherQualityFilter(language=tok),
                 JsonlWriter(str(out / "filtered"), output_filename="${rank}.jsonl.gz"),
                 MinhashDedupSignature(str(out / "sigs"), config=mh, language=tok)], n, "sigs")
    stage2 = ex([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=mh)], mh.num_buckets, "buckets")
    stage3 = ex([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=mh)], 1, "cluster")
    def read_own_file(data, rank: int = 0, world_size: int = 1):
        """Stage 4 task `rank` must read what stage 1 task `rank` wrote (a task that kept nothing wrote no
        file, so JsonlReader's own sharding of the listed files would pair tasks with the wrong .remove)."""
        name = f"{rank:05d}.jsonl.gz"
        if (out / "filtered" / name).is_file():
            yield from JsonlReader(str(out / "filtered"), glob_pattern=name).run(None, 0, 1)

    stage4 = ex([read_own_file, MinhashDedupFilter(str(out / "remove")),
                 JsonlWriter(str(out / "final"), output_filename="${rank}.jsonl.gz")], n, "filter")
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    t0 = time.perf_counter()
    for stage in (stage1, stage2, stage3, stage4):
        stage.run()
    wall = time.perf_counter() - t0
    kept = []
    for p in sorted((out / "final").glob("*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            kept += [json.loads(line)["id"] for line in f]
    return {"wall_s": wall, "kept_ids": kept}


def child_main(args: argparse.Namespace) -> None:
    inputs = [Path(p) for p in json.loads(Path(args.inputs).read_text())]
    out = Path(args.out)
    if args.run in ("ours", "scale"):
        res = run_ours(inputs, out, args.workers, ids=args.run == "ours")
    else:
        res = run_datatrove(inputs, out, args.workers, args.timeout)
    Path(args.result).write_text(json.dumps(res))


def run_child(mode: str, inputs: list[Path], tmp: Path, workers: int, timeout: float, tag: str) -> dict:
    """Run one side in a child process; sample the RSS of its whole process tree."""
    import psutil

    inp = tmp / f"{tag}-inputs.json"
    inp.write_text(json.dumps([str(p) for p in inputs]))
    res = tmp / f"{tag}-result.json"
    out = tmp / f"{tag}-out"
    cmd = [sys.executable, __file__, "--run", mode, "--inputs", str(inp), "--out", str(out), "--result", str(res),
           "--workers", str(workers), "--timeout", str(timeout)]
    adopt_orphans()  # gristmill's pool runs under a forkserver the child never waits for: adopt it to count it
    cpu0 = children_cpu_s()
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    p = psutil.Process(proc.pid)
    peak = 0
    cpu = 0.0  # CPU seconds of the tree, including its reaped processes (last sample before it ends)
    while proc.poll() is None:
        try:
            procs = [p] + p.children(recursive=True)
            rss = 0
            used = 0.0
            for q in procs:
                try:
                    rss += q.memory_info().rss
                    t = q.cpu_times()
                    used += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
            peak = max(peak, rss)
            cpu = max(cpu, used)
        except psutil.Error:
            pass
        time.sleep(0.05)
    try:  # pool processes a failed run may leave behind (the child's own session)
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    reap_orphans()
    # exact CPU of the child and of every process under it (poll() reaped the child, reap_orphans the
    # processes it left to us), unlike the sampled cpu_s
    cpu_tree = children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
    r = json.loads(res.read_text())
    r["cpu_tree_s"] = cpu_tree
    r["peak_rss_mb"] = peak / 2**20
    # a throughput measure other load on the machine hardly moves (wall-clock docs/s does); sampled, so the
    # last 50 ms are missing
    r["cpu_s"] = cpu
    return r


# ------------------------------------------------------------------------------------------------
# measurements


def kept_quality(kept_ids: list[str], truth_path: Path) -> dict:
    """On the demo dump: share of clean English articles kept, spam / foreign / duplicate copies kept."""
    truth = {}
    for line in truth_path.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        truth[t["record_id"]] = t
    by_url = {t["url"]: i for i, t in truth.items() if t["warc_type"] == "response"}

    def root(i):
        while truth[i].get("duplicate_of") and truth[i]["duplicate_of"] in by_url:
            i = by_url[truth[i]["duplicate_of"]]
        return i

    kept = [i for i in kept_ids if i in truth]
    clusters: dict[str, int] = {}
    for i in kept:
        clusters[root(i)] = clusters.get(root(i), 0) + 1
    good = {root(i) for i, t in truth.items() if t["kind"] in ("article", "exact_duplicate", "near_duplicate")
            and t["language"] == "en"}
    kept_roots = {root(i) for i in kept}
    return {
        "kept": len(kept),
        "english_originals_kept": round(len(good & kept_roots) / max(1, len(good)), 4),
        "spam_kept": sum(str(truth[i]["kind"]).startswith("spam") for i in kept),
        "non_english_kept": sum(truth[i]["language"] not in ("en",) for i in kept),
        "duplicate_copies_kept": sum(n - 1 for n in clusters.values()),
        # distinct clean English originals among the kept documents, per kept document
        "precision": round(len(good & kept_roots) / max(1, len(kept)), 4),
    }


def snippet_eval(data: Path, html_dir: Path) -> dict:
    """trafilatura's with/without snippet evaluation: our extraction vs plain trafilatura.extract."""
    import trafilatura

    from gristmill.curate.config import CurateConfig
    from gristmill.curate.extract import Extractor
    from gristmill.curate.readers import decode_html

    ev = json.loads((data / "boilerplate" / "trafilatura_eval" / "evaldata.json").read_text(encoding="utf-8"))
    ours = Extractor(CurateConfig().extraction)
    counts = {"plain": [0, 0, 0, 0], "ours": [0, 0, 0, 0]}  # tp, fn, fp, tn
    pages = 0
    for url, item in ev.items():
        path = next((p for p in (html_dir / "cache" / item["file"], html_dir / "eval" / item["file"]) if p.is_file()),
                    None)
        if path is None:
            continue
        raw = path.read_bytes()
        pages += 1
        plain = trafilatura.extract(raw) or ""
        text, _ = decode_html(raw)
        mine = (ours.extract(text)[0] or "") if text is not None else ""
        for name, out in (("plain", plain), ("ours", mine)):
            c = counts[name]
            for s in item.get("with", []):
                c[0 if s in out else 1] += 1
            for s in item.get("without", []):
                c[2 if s in out else 3] += 1
    res = {"pages": pages}
    for name, (tp, fn, fp, tn) in counts.items():
        p = tp / max(1, tp + fp)
        r = tp / max(1, tp + fn)
        res[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(1e-9, p + r), 4),
                     "accuracy": round((tp + tn) / max(1, tp + fn + fp + tn), 4)}
    return res


# ------------------------------------------------------------------------------------------------
# --scale: synthetic short documents


_ADJ = ("small quiet early local public simple modern careful common recent private useful strong open clear "
        "happy bright narrow heavy gentle brief large young ancient steady warm honest rapid rural formal").split()
_NOUN = ("river market teacher garden village library engine report station family letter kitchen season window "
         "harbor bridge meeting museum forest doctor painter council student theater journey orchard bakery "
         "mountain newspaper festival hospital factory farmer island company lecture customer neighbor").split()
_VERB = ("visited described opened repaired studied painted measured followed improved finished reviewed "
         "carried built watched explained cleaned planned answered moved changed reached shared tested").split()
_PREP = "near behind beside across during after before under above around within beyond".split()
_ADV = "quietly quickly carefully slowly often again rarely gladly early later together finally".split()
SCALE_SHARD = 50_000  # documents per JSONL file (one curate task each): per-task state stays the same size


def _synthetic_text(i: int) -> str:
    """Document i (deterministic): 8-12 sentences of 8-14 English words, in 2-3 paragraphs (~100 words)."""
    import random

    rng = random.Random(i)
    c = rng.choice
    sents = []
    for _ in range(rng.randint(8, 12)):
        form = rng.randrange(3)
        if form == 0:
            s = f"The {c(_ADJ)} {c(_NOUN)} {c(_VERB)} the {c(_NOUN)} {c(_PREP)} the {c(_ADJ)} {c(_NOUN)}."
        elif form == 1:
            s = (f"Yesterday a {c(_NOUN)} from the {c(_NOUN)} {c(_ADV)} {c(_VERB)} our {c(_ADJ)} {c(_NOUN)} "
                 f"and the {c(_NOUN)}.")
        else:
            s = (f"We {c(_ADV)} {c(_VERB)} this {c(_NOUN)} {c(_PREP)} the {c(_NOUN)}, because it was "
                 f"{c(_ADJ)} and {c(_ADJ)}.")
        sents.append(s)
    cut = sorted(rng.sample(range(1, len(sents)), rng.randint(1, 2)))
    paras = [" ".join(sents[a:b]) for a, b in zip([0] + cut, cut + [len(sents)])]
    return "\n\n".join(paras)


def write_synthetic_jsonl(out: Path, n: int) -> list[Path]:
    """n documents in shards of SCALE_SHARD: 95 % distinct, 2.5 % exact copies and 2.5 % near
    copies (two words replaced) of an earlier document."""
    import random

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in range(0, n, SCALE_SHARD):
        p = out / f"docs-{s // SCALE_SHARD:05d}.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for i in range(s, min(n, s + SCALE_SHARD)):
                r = (i * 2654435761) % 1000  # a fixed pattern, not the text's own random stream
                if i > 0 and r < 25:
                    text = _synthetic_text(random.Random(-i).randrange(i))
                elif i > 0 and r < 50:
                    words = _synthetic_text(random.Random(-i).randrange(i)).split(" ")
                    rng = random.Random(i)
                    for _ in range(2):
                        words[rng.randrange(len(words))] = rng.choice(_NOUN)
                    text = " ".join(words)
                else:
                    text = _synthetic_text(i)
                f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
        files.append(p)
    return files


def scale_main(args: argparse.Namespace) -> None:
    small, large = (int(x) for x in args.scale_docs.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_curate_scale_") as td:
        tmp = Path(td)
        res = {}
        for n in (small, large):
            t0 = time.perf_counter()
            files = write_synthetic_jsonl(tmp / f"in-{n}", n)
            print(f"{n} documents generated in {time.perf_counter() - t0:.0f} s "
                  f"({sum(f.stat().st_size for f in files) / 2**20:.0f} MB, {len(files)} files)", flush=True)
            r = run_child("scale", files, tmp, args.workers, args.timeout, f"scale{n}")
            shutil.rmtree(tmp / f"in-{n}")
            shutil.rmtree(tmp / f"scale{n}-out", ignore_errors=True)
            r["docs_s"] = r["records_read"] / r["wall_s"]
            r["docs_cpu_s"] = r["records_read"] / r["cpu_s"]
            res[n] = r
            print(f"  {n:>9} docs: peak RSS {r['peak_rss_mb']:.0f} MB, {r['wall_s']:.0f} s, {r['docs_s']:.0f} docs/s, "
                  f"{r['docs_cpu_s']:.0f} docs per CPU-second, "
                  f"kept {r['kept']}, dropped {sum(r['dropped'].values())} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(r['dropped'].items(), key=lambda kv: -kv[1])[:4])}); "
                  f"dedup index {r['dedup_index']['bytes_per_document']} bytes/document", flush=True)
        a, b = res[small], res[large]
        index_mb = b["dedup_index"]["bytes"] / 2**20
        limit = 1.3 * a["peak_rss_mb"] + index_mb
        print(f"\nscale: peak RSS {a['peak_rss_mb']:.0f} MB at {small} docs, {b['peak_rss_mb']:.0f} MB at {large}; "
              f"ratio {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x; dedup index at {large}: "
              f"{b['dedup_index']['bytes_per_document']} bytes/doc = {index_mb:.0f} MB; target RSS <= 1.3 x "
              f"{a['peak_rss_mb']:.0f} + {index_mb:.0f} = {limit:.0f} MB: "
              f"{'met' if b['peak_rss_mb'] <= limit else 'NOT met'}")
        print(f"throughput: {a['docs_s']:.0f} docs/s at {small}, {b['docs_s']:.0f} docs/s at {large} "
              f"({b['docs_s'] / a['docs_s']:.2f}x); per CPU-second (not moved by other load on the machine): "
              f"{a['docs_cpu_s']:.0f} and {b['docs_cpu_s']:.0f} ({b['docs_cpu_s'] / a['docs_cpu_s']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pages", type=int, default=2000, help="pages in the generated demo dump")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="peer comparison: rounds of datatrove + gristmill, "
                    "the order alternating (>= 1)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-page extraction limit, both sides (seconds)")
    ap.add_argument("--mem-pages", type=int, default=1000, help="memory check: N and 10 N demo pages")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--scale", action="store_true", help="memory vs corpus size on synthetic JSONL (see above)")
    ap.add_argument("--scale-docs", default="100000,1000000", help="--scale: the two corpus sizes, small,large")
    # child mode
    ap.add_argument("--run", choices=("ours", "datatrove", "scale"))
    ap.add_argument("--inputs")
    ap.add_argument("--out")
    ap.add_argument("--result")
    args = ap.parse_args()
    if args.run:
        child_main(args)
        return
    if args.scale:
        scale_main(args)
        return
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not (args.data / "web").is_dir():
        raise SystemExit(f"{args.data}: no web/ folder; pass --data PATH to the shared data bundle")
    from gristmill.demo import write_demo_data

    with tempfile.TemporaryDirectory(prefix="bench_curate_") as td:
        tmp = Path(td)
        html_warc, html_dir, n_html = pack_html_as_warc(
            args.data / "boilerplate" / "trafilatura_eval" / "html.tar.gz", tmp / "trafilatura_eval.warc.gz", tmp)
        demo = tmp / "demo"
        write_demo_data(demo, pages=args.pages, seed=0)
        inputs = real_warcs(args.data) + [html_warc, demo / "web.warc.gz"]
        print(f"input: {len(inputs) - 2} real WARC files, {n_html} eval HTML pages, demo dump of {args.pages} pages; "
              f"workers={args.workers}", flush=True)

        dt_inputs = inputs[:-1] + [without_broken_tail(demo / "web.warc.gz", tmp / "demo-for-datatrove.warc.gz")]
        runs: dict[str, list[dict]] = {"datatrove": [], "gristmill": []}
        for rnd in range(args.rounds):
            for side in round_order(("datatrove", "gristmill"), rnd):
                tag = ("dt" if side == "datatrove" else "ours") + (f"-r{rnd + 1}" if rnd else "")
                r = (run_child("datatrove", dt_inputs, tmp, args.workers, args.timeout, tag) if side == "datatrove"
                     else run_child("ours", inputs, tmp, args.workers, args.timeout, tag))
                if rnd:  # later rounds are timed only; round 1's outputs are the ones inspected below
                    shutil.rmtree(tmp / f"{tag}-out", ignore_errors=True)
                    r.pop("kept_ids")
                runs[side].append(r)
            d, o = runs["datatrove"][-1], runs["gristmill"][-1]
            print(f"round {rnd + 1} ({' then '.join(round_order(('datatrove', 'gristmill'), rnd))}): datatrove "
                  f"{d['wall_s']:.1f} s wall / {d['cpu_tree_s']:.1f} s CPU, gristmill {o['wall_s']:.1f} s wall / "
                  f"{o['cpu_tree_s']:.1f} s CPU; datatrove/gristmill wall {d['wall_s'] / o['wall_s']:.2f}x, "
                  f"CPU {d['cpu_tree_s'] / o['cpu_tree_s']:.2f}x", flush=True)
        dt, ours = runs["datatrove"][0], runs["gristmill"][0]
        records = ours["records_read"]
        wall_ratios = [d["wall_s"] / o["wall_s"] for d, o in zip(runs["datatrove"], runs["gristmill"])]
        cpu_ratios = [d["cpu_tree_s"] / o["cpu_tree_s"] for d, o in zip(runs["datatrove"], runs["gristmill"])]
        q_dt = kept_quality(dt["kept_ids"], demo / "truth.jsonl")
        q_ours = kept_quality(ours["kept_ids"], demo / "truth.jsonl")
        overlap = len(set(dt["kept_ids"]) & set(ours["kept_ids"]))
        med = statistics.median
        print(f"\nmedian over {args.rounds} rounds\n{'':<12}{'wall s':>9}{'CPU s':>9}{'records/s':>11}{'kept':>7}"
              f"{'peak RSS MB':>13}")
        for name, r in (("datatrove", dt), ("gristmill", ours)):
            rs = runs[name]
            wall = med(x["wall_s"] for x in rs)
            print(f"{name:<12}{wall:>9.1f}{med(x['cpu_tree_s'] for x in rs):>9.1f}{records / wall:>11.1f}"
                  f"{len(r['kept_ids']):>7}{med(x['peak_rss_mb'] for x in rs):>13.0f}")
        print(f"throughput ratio gristmill/datatrove, median (min-max) over {args.rounds} rounds: wall "
              f"{spread(wall_ratios)}, CPU {spread(cpu_ratios)}  (target >= 1.3x wall: "
              f"{'PASS' if statistics.median(wall_ratios) >= 1.3 else 'FAIL'}; {records} records read)")
        print(f"kept documents in common: {overlap} (datatrove {len(dt['kept_ids'])}, gristmill "
              f"{len(ours['kept_ids'])})")
        only_dt = set(dt["kept_ids"]) - set(ours["kept_ids"])
        if only_dt:
            from collections import Counter

            from gristmill.curate.ledger import iter_ledger

            why = Counter(r["reason"] for r in iter_ledger(tmp / "ours-out" / "ledger.parquet",
                                                                           ["id", "stage", "reason"])
                          if r["id"] in only_dt)
            print("  kept by datatrove only, dropped by gristmill at: "
                  + ", ".join(f"{k} {v}" for k, v in why.most_common(8)))
        print("kept-set quality on the demo dump (ground truth):")
        for k in q_ours:
            print(f"  {k:<26} datatrove {q_dt[k]!s:>8}   gristmill {q_ours[k]!s:>8}")
        print(f"dedup index: {ours['dedup_index']}")

        if not args.skip_memory:
            small, big = tmp / "mem_small", tmp / "mem_big"
            write_demo_data(small, pages=args.mem_pages, seed=1)
            write_demo_data(big, pages=10 * args.mem_pages, seed=1)
            a = run_child("ours", [small / "web.warc.gz"], tmp, args.workers, args.timeout, "mem1")
            b = run_child("ours", [big / "web.warc.gz"], tmp, args.workers, args.timeout, "mem10")
            print(f"\nmemory: {args.mem_pages} pages -> peak RSS {a['peak_rss_mb']:.0f} MB; {10 * args.mem_pages} pages "
                  f"-> {b['peak_rss_mb']:.0f} MB; ratio {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x (target <= 1.5x); "
                  f"dedup index {b['dedup_index']['bytes_per_document']} bytes/document "
                  f"({b['dedup_index']['bytes'] / 2**20:.1f} MB for {b['dedup_index']['documents']} documents)")

        # robustness: every file of shared/data/web (WARC, WET, WAT, JSONL, the malformed WET sample) and the
        # eval pages as a plain folder of .html files
        allin = sorted((args.data / "web").iterdir()) + [html_dir]
        r = run_child("ours", allin, tmp, args.workers, args.timeout, "all")
        print(f"\nall of {args.data / 'web'} + {n_html} .html files: {r['records_read']} records read, "
              f"{len(r['kept_ids'])} kept, ledger complete (records read = kept + dropped, checked); "
              f"{r['wall_s']:.1f} s; top drop reasons: "
              + ", ".join(f"{k} {v}" for k, v in sorted(r["dropped"].items(), key=lambda kv: -kv[1])[:6]))

        if not args.skip_eval:
            ev = snippet_eval(args.data, html_dir)
            print(f"\ntrafilatura with/without snippet evaluation ({ev['pages']} pages):")
            for name in ("plain", "ours"):
                e = ev[name]
                label = "plain trafilatura.extract" if name == "plain" else "gristmill extraction"
                print(f"  {label:<27} precision {e['precision']:.4f}  recall {e['recall']:.4f}  F1 {e['f1']:.4f}  "
                      f"accuracy {e['accuracy']:.4f}")


if __name__ == "__main__":
    main()
