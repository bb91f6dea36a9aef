"""Pretrain loop overhead: our full `run_pretrain` steps/s against a bare training loop on the same model, batches and device.

The bare loop is what every loop must do: forward, backward, clip, AdamW step, on batches already
in memory. Ours adds the data windows read from memmaps, spike detection (one host sync per step),
metrics.jsonl rows, the progress bar, periodic validation and the step-0 / final checkpoints. Both
run the same steps in --rounds rounds (bare then ours, then ours then bare, ...; the machine is shared),
each round's figures printed. Two ratios ours / bare speed, each the median (min-max) over rounds of
that round's ratio: wall time per step after a warm-up, and process CPU time of the whole loop
(time.process_time, all threads; steadier on a shared machine with --threads 1). tok/s and MFU: the
medians. On a GPU with a known peak, MFU (6N + attention FLOPs per token over the bf16 peak).

    python benchmarks/bench_pretrain.py                                  # CPU: tiny and small
    python benchmarks/bench_pretrain.py --device cuda --preset 124m      # GPU: bf16 autocast, MFU
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gristmill.manifests import new_manifest, output_record, write_manifest
from gristmill.pretrain.config import PretrainConfig
from gristmill.train.config import CheckpointConfig, OptimConfig, SpikeConfig
from gristmill.pretrain.data import TokenWindows, TrainBatches
from gristmill.pretrain.evaluate import causal_lm_loss, flops_per_token
from gristmill.train.metrics import mfu, peak_flops
from gristmill.train.parallel import autocast_for
from gristmill.train.trainer import make_optimizer
from gristmill.pretrain.model import build_model, llama_config
from gristmill.train.parallel import Parallel
from gristmill.pretrain.run import run_pretrain
from gristmill.tokenize.config import TokenizeConfig
from gristmill.tokenize.run import run_tokenize
from gristmill.tokenize.shards import ShardSet
from interleave import round_order, spread  # benchmarks/interleave.py (this script's folder is on sys.path)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"
# per preset: steps timed (after `warm` more), windows per micro-batch, tokens per window
SHAPES = {"tiny": dict(steps=120, warm=10, batch_size=8, seq_len=256),
          "small": dict(steps=40, warm=4, batch_size=2, seq_len=256),
          "124m": dict(steps=150, warm=20, batch_size=32, seq_len=1024)}


def documents(data: Path, max_chars: int) -> list[str]:
    """Real text (books, Wikipedia, Shakespeare) cut into ~4k-character documents; generated text when absent."""
    texts = []
    text_dir = data / "text"
    for p in sorted(text_dir.glob("gutenberg_nltk/*.txt.gz")):
        texts.append(gzip.open(p, "rt", encoding="utf-8", errors="replace").read())
    for p in (text_dir / "tinyshakespeare.txt", text_dir / "wikitext-2/valid.txt", text_dir / "wikitext-2/test.txt"):
        if p.is_file():
            texts.append(p.read_text(encoding="utf-8", errors="replace"))
    if not texts:
        print(f"note: no text under {text_dir}; benchmarking on generated text")
        r = random.Random(0)
        words = [f"w{i}" for i in range(3000)]
        texts = [" ".join(r.choice(words) for _ in range(400_000))]
    docs, total = [], 0
    for t in texts:
        for i in range(0, len(t), 4000):
            docs.append(t[i:i + 4000])
            total += len(docs[-1])
            if total >= max_chars:
                return docs
    return docs


def token_folder(root: Path, data: Path, vocab_size: int, max_chars: int) -> Path:
    """A curate-shaped folder of the documents, tokenized by the tokenize stage."""
    docs = documents(data, max_chars)
    cur = root / "curate"
    cur.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"doc-{i}", "text": t, "url": None, "metadata": {}} for i, t in enumerate(docs)]
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    m = new_manifest("curate", {"bench": True, "content": digest}, [])
    with open(cur / "documents-00000.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for r in rows:
            f.write((json.dumps(r) + "\n").encode())
    m.outputs = [output_record(cur, "documents-00000.jsonl.gz", "documents", records=len(rows))]
    write_manifest(cur, m)
    tok = root / "tokens"
    run_tokenize(TokenizeConfig(vocab_size=vocab_size, val_fraction=0.02), {"data": [cur]}, tok)
    return tok


def config(preset: str, device: str, steps: int, batch_size: int, seq_len: int, compile: bool) -> PretrainConfig:
    return PretrainConfig(preset=preset, max_steps=steps, batch_size=batch_size, seq_len=seq_len, device=device,
                          compile=compile, optim=OptimConfig(lr=1e-3, warmup_steps=min(10, steps)),
                          eval_every=max(1, steps // 2), eval_batches=1,  # two evaluations: mid-run and last step
                          log_every=1, checkpoint=CheckpointConfig(every=10**9), spike=SpikeConfig(window=8))


def bare_loop(cfg: PretrainConfig, tok: Path, warm: int) -> tuple[float, float]:
    """Forward / backward / clip / AdamW over the same batches, held in memory.

    Returns (wall seconds per step after `warm` steps, process CPU seconds for all steps)."""
    dev = torch.device("cuda" if cfg.device == "cuda" else "cpu")
    train = ShardSet.open(tok, "train", verify=False)
    model = build_model(llama_config(cfg, vocab_size=train.vocab_size, eos_id=train.eos_id), seed=cfg.seed).to(dev)
    fwd = torch.compile(model) if cfg.compile else model
    par = Parallel(rank=0, world_size=1, local_rank=0, device=dev, owns_group=False)
    opt = make_optimizer(model, cfg.optim, par)
    data = TrainBatches(TokenWindows(train.shards, cfg.seq_len), seed=cfg.seed, batch_size=cfg.batch_size,
                        grad_accum=cfg.grad_accum)
    batches = [torch.from_numpy(data.micro_batches(s * data.global_batch)[0]).to(dev) for s in range(cfg.max_steps)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0, c0 = 0.0, time.process_time()
    for s, x in enumerate(batches):
        if s == warm:
            sync()
            t0 = time.perf_counter()
        with autocast_for(dev, cfg.dtype):
            loss_sum, n = causal_lm_loss(fwd, x)
        (loss_sum / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - t0) / (cfg.max_steps - warm), time.process_time() - c0


def our_loop(cfg: PretrainConfig, tok: Path, out: Path, warm: int) -> tuple[float, float, dict]:
    """run_pretrain: (wall seconds per step after `warm`, read from metrics.jsonl; process CPU seconds of the
    whole training loop, step-0 and final checkpoints included; the manifest metrics)."""
    from gristmill.train import loop

    real, cpu = loop.train, []

    def timed(*a, **k):
        c0 = time.process_time()
        try:
            return real(*a, **k)
        finally:
            cpu.append(time.process_time() - c0)
    loop.train = timed  # run.py looks it up at call time
    try:
        m = run_pretrain(cfg, {"data": [tok]}, out, force=True)
    finally:
        loop.train = real
    rows: dict[int, dict] = {}  # step -> its last row; time_s (wall seconds since the loop started) is in
    for name in ("metrics.jsonl", "timings.jsonl"):  # timings.jsonl since metrics.jsonl became deterministic
        path = out / name
        for line in path.read_text().splitlines() if path.is_file() else []:
            r = json.loads(line)
            rows.setdefault(r["step"], {}).update(r)
    return (rows[cfg.max_steps]["time_s"] - rows[warm]["time_s"]) / (cfg.max_steps - warm), cpu[0], m.metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--preset", nargs="+", choices=list(SHAPES), default=None,
                    help="default: tiny small on CPU, 124m on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default per preset)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=3,
                    help="rounds of bare + ours, the order alternating; medians over rounds (--repeats: old name)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both loops")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default); 1 is steadier "
                    "on a shared machine")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--max-chars", type=int, default=8_000_000, help="text to tokenize")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    presets = args.preset or (["124m"] if args.device == "cuda" else ["tiny", "small"])
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_pretrain_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        tok = token_folder(root, args.data, args.vocab_size, args.max_chars)
        meta = json.loads((tok / "manifest.json").read_text())["metrics"]
        print(f"tokens: {meta['train_tokens']:,} train, vocab {meta['vocab_size']:,} ({time.perf_counter() - t:.1f}s); "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
              + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
        header = (f"{'preset':<7} {'params':>11} {'tokens/step':>11} {'bare tok/s':>11} {'ours tok/s':>11} "
                  f"{'ours/bare wall':>21} {'ours/bare CPU':>21} {'MFU bare':>9} {'MFU ours':>9}")
        rows = []
        for preset in presets:
            shape = SHAPES[preset]
            warm = shape["warm"]
            steps = (args.steps or shape["steps"]) + warm
            cfg = config(preset, args.device, steps, args.batch_size or shape["batch_size"],
                         args.seq_len or shape["seq_len"], args.compile)
            bare, ours, bare_cpu, ours_cpu, metrics = [], [], [], [], {}
            for r in range(args.rounds):
                for side in round_order(("bare", "ours"), r):
                    if side == "bare":
                        w, c = bare_loop(cfg, tok, warm)
                        bare.append(w)
                        bare_cpu.append(c)
                    else:
                        w, c, metrics = our_loop(cfg, tok, root / f"pt-{preset}", warm)
                        ours.append(w)
                        ours_cpu.append(c)
                print(f"{preset} round {r + 1} ({' then '.join(round_order(('bare', 'ours'), r))}): wall s/step bare "
                      f"{bare[-1]:.4f}, ours {ours[-1]:.4f} ({bare[-1] / ours[-1]:.3f}x); CPU s bare {bare_cpu[-1]:.1f}, "
                      f"ours {ours_cpu[-1]:.1f} ({bare_cpu[-1] / ours_cpu[-1]:.3f}x)", flush=True)
            tokens = cfg.batch_size * cfg.seq_len
            tb, to = tokens / statistics.median(bare), tokens / statistics.median(ours)
            shape_m = cfg.model_shape()
            fpt = flops_per_token(params=metrics["params"], num_layers=shape_m["num_layers"],
                                  hidden_size=shape_m["hidden_size"], seq_len=cfg.seq_len)
            peak = peak_flops(torch.device(args.device), cfg.peak_tflops)
            mb, mo = mfu(tb, fpt, peak), mfu(to, fpt, peak)
            pct = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")
            # ours / bare speed per round (> 1: ours faster), for wall time per step and for CPU time of the loop
            wall_ratio = spread([b / o for b, o in zip(bare, ours)], ".3f")
            cpu_ratio = spread([b / o for b, o in zip(bare_cpu, ours_cpu)], ".3f")
            rows.append(f"{preset:<7} {metrics['params']:>11,} {tokens:>11,} {tb:>11,.0f} {to:>11,.0f} "
                        f"{wall_ratio:>21} {cpu_ratio:>21} {pct(mb):>9} {pct(mo):>9}")
            rows.append(f"        wall s/step bare: {', '.join(f'{x:.4f}' for x in bare)}; ours: "
                        f"{', '.join(f'{x:.4f}' for x in ours)}; CPU s bare: {', '.join(f'{x:.1f}' for x in bare_cpu)}; "
                        f"ours: {', '.join(f'{x:.1f}' for x in ours_cpu)}; final train loss "
                        f"{metrics['final_train_loss']:.3f}, val loss {metrics['val_loss']:.3f}")
        print(f"\nmedian over {args.rounds} rounds; ratios: median (min-max) of the rounds' ours/bare speed")
        print("\n".join([header] + rows), flush=True)

if __name__ == "__main__":
    main()
