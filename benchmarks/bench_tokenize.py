"""Documents -> token shards: gristmill's tokenize stage vs raw encode_batch (the limit) and datatrove.

    .venv/bin/python benchmarks/bench_tokenize.py [--data ../shared/data] [--repeat 8] [--rounds 3]

All three run in this process on the same documents with the same tokenizer (a local tokenizer.json,
default the GPT-NeoX-20B BPE in DATA/tokenizer) and the same Rayon threads (all cores unless
RAYON_NUM_THREADS says otherwise):
  raw encode_batch   tokenizer.encode_batch on the in-memory texts, batch by batch, results dropped
  gristmill          run_tokenize on a curate folder of the same documents (jsonl.gz read, id-hash
                     split, encode, shards + index written, manifest hashed): the whole stage
  datatrove          JsonlReader -> DocumentTokenizer on the same jsonl.gz (shuffle off: its fastest
                     setting; ours does not shuffle either)
  gristmill, N workers
                     the same stage with tokenize.workers=N (--workers): N encoding tasks in datatrove's
                     local process pool, each on its own input shards, then the merge
tokens/s counts the same tokens (eos included) for every method; MB/s is UTF-8 text bytes per second;
peak RSS is the highest resident memory seen while the method ran, above what the process held before
(this process only: the workers' pool processes are not in it);
CPU s is the CPU time of all threads of this process (when wall ~ CPU, other processes held the other
cores; for the workers side it misses the pool processes, so it is not comparable).
Rounds interleave the methods; seconds are the median of --rounds with the range (min-max) beside it,
ratios are of medians, since the machine is shared. gristmill's figure includes its fixed per-run cost
(tokenizer folder, manifest hashing, fsyncs: about 0.4 s), so small corpora understate its rate.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"
TOKENIZER = "tokenizer/dolma_gpt-neox-20b-pii-special_tokenizer.json"


def load_texts(data: Path) -> list[str]:
    """Real text: Wikipedia articles, C4 pages and Common Crawl documents from the data bundle."""
    texts: list[str] = []
    wiki = data / "text/llamafactory_wiki_demo.txt"
    if wiki.is_file():
        texts += [line for line in wiki.read_text(encoding="utf-8").split("\n") if line.strip()]
    c4 = data / "text/llamafactory_c4_demo.jsonl"
    if c4.is_file():
        texts += [json.loads(line)["text"] for line in c4.open(encoding="utf-8") if line.strip()]
    dolma = data / "web/cc-main-2019-30_dolma_docs.jsonl.gz"
    if dolma.is_file():
        with gzip.open(dolma, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    if not texts:
        raise SystemExit(f"no benchmark text found under {data}; pass --data")
    return texts


class PeakRSS:
    """Highest resident set size (bytes) sampled every 5 ms while the block runs, minus the start."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(methods: dict, rounds: int) -> dict[str, tuple[list[float], float, list[float]]]:
    """name -> (seconds of each round, largest peak RSS delta in MB, CPU seconds of all threads of each round);
    rounds interleave the methods so that a slow spell of the (shared) machine hits all of them alike."""
    res = {name: ([], 0.0, []) for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            with PeakRSS() as mem:
                t, c = time.perf_counter(), time.process_time()
                fn()
                sec, cpu = time.perf_counter() - t, time.process_time() - c
            secs, peak, cpus = res[name]
            res[name] = (secs + [sec], max(peak, mem.delta_mb), cpus + [cpu])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tokenizer", type=Path, default=None, help=f"a tokenizer.json (default DATA/{TOKENIZER})")
    ap.add_argument("--repeat", type=int, default=8, help="copies of the corpus (distinct ids) to make timing stable")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per method; median and range are reported")
    ap.add_argument("--workers", type=int, default=2, help="tokenize.workers of the workers side (0 = leave it out)")
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from gristmill.tokenize.config import TokenizeConfig
    from gristmill.tokenize.run import run_tokenize

    tok_path = args.tokenizer or args.data / TOKENIZER
    texts = load_texts(args.data) * args.repeat
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tok = Tokenizer.from_file(str(tok_path))
    bs = args.batch_size
    print(f"{len(texts)} documents, {n_bytes / 1e6:.1f} MB of text, tokenizer {tok_path.name} "
          f"(vocab {tok.get_vocab_size()}), {os.cpu_count()} cores, RAYON_NUM_THREADS="
          f"{os.environ.get('RAYON_NUM_THREADS', 'unset')}, batch {bs}")

    work = Path(tempfile.mkdtemp(prefix="bench_tokenize."))
    try:
        # The curate folder both pipelines read (written once, outside the timing).
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import fake_curate_dir

        curate = fake_curate_dir(work / "curate", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)],
                                 shard_docs=max(1, len(texts) // 4))

        def raw(fast: bool = False) -> None:
            enc = tok.encode_batch_fast if fast else tok.encode_batch
            for a in range(0, len(texts), bs):
                enc(texts[a:a + bs], add_special_tokens=False)

        n_runs = {"n": 0}

        def ours(workers: int = 1) -> None:
            n_runs["n"] += 1
            out = work / f"ours{n_runs['n']}"
            run_tokenize(TokenizeConfig(batch_size=bs, shard_tokens=50_000_000, workers=workers),
                         {"data": [curate], "tokenizer": [tok_path]}, out)
            ours.manifest = json.loads((out / "manifest.json").read_text())
            shutil.rmtree(out)  # keep the page cache and /tmp to what the next round reads

        def datatrove() -> None:
            from datatrove.pipeline.readers import JsonlReader
            from datatrove.pipeline.tokens import DocumentTokenizer

            from datatrove.utils.logging import logger

            logger.remove()  # the workers side's run puts datatrove's default logger back
            n_runs["n"] += 1
            reader = JsonlReader(str(curate), glob_pattern="documents-*.jsonl.gz")
            step = DocumentTokenizer(str(work / f"dt{n_runs['n']}"), tokenizer_name_or_path=str(tok_path),
                                     eos_token="<|endoftext|>", batch_size=bs, shuffle_documents=False)
            step.run(reader.run(rank=0, world_size=1), rank=0, world_size=1)

        from datatrove.utils.logging import logger
        logger.remove()  # its per-step log lines would otherwise land in the timing

        raw()  # warm the Rayon pool and the page cache
        ours()  # and the one-time imports (transformers) of the stage
        methods = {"raw encode_batch (limit)": raw, "raw encode_batch_fast": lambda: raw(fast=True),
                   "gristmill tokenize": ours, "datatrove DocumentTokenizer": datatrove}
        wname = f"gristmill, {args.workers} workers"
        if args.workers:
            methods[wname] = lambda: ours(args.workers)
        results = timed(methods, args.rounds)
        metrics = ours.manifest["metrics"]
        n_tokens = metrics["train_tokens"] + metrics["val_tokens"]
        print(f"{n_tokens} tokens incl. eos, {metrics['bytes_per_token']} bytes/token, "
              f"{len(metrics['shards'])} shards, dtype {metrics['dtype']}\n")
        import statistics

        print(f"{'method':30s} {'seconds':>8s} {'range':>15s} {'Mtok/s':>8s} {'MB/s':>7s} {'peak RSS +MB':>13s} "
              f"{'CPU s':>7s}")
        for name, (secs, mb, cpus) in results.items():
            sec, cpu = statistics.median(secs), statistics.median(cpus)
            print(f"{name:30s} {sec:8.3f} {f'{min(secs):.3f}-{max(secs):.3f}':>15s} {n_tokens / sec / 1e6:8.3f} "
                  f"{n_bytes / sec / 1e6:7.2f} {mb:13.1f} {cpu:7.2f}")
        t = {k: statistics.median(v[0]) for k, v in results.items()}
        print(f"\ngristmill / raw encode_batch       = {t['raw encode_batch (limit)'] / t['gristmill tokenize']:.2f}x "
              "(target >= 0.9)")
        print(f"gristmill / raw encode_batch_fast  = {t['raw encode_batch_fast'] / t['gristmill tokenize']:.2f}x")
        print(f"gristmill / datatrove              = {t['datatrove DocumentTokenizer'] / t['gristmill tokenize']:.2f}x "
              "(target >= 1.2)")
        if args.workers:
            lim = t["raw encode_batch (limit)"]
            print(f"{wname} / raw encode_batch = {lim / t[wname]:.2f}x (target >= 0.95)")
            print(f"{wname} / datatrove        = {t['datatrove DocumentTokenizer'] / t[wname]:.2f}x (target >= 1.5)")
            print(f"{wname} / 1 worker         = {t['gristmill tokenize'] / t[wname]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
