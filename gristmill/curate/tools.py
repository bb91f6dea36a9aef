"""The curate stage's model-building commands: `gristmill curate train-reference` and `train-quality`.

Each writes a folder with the model and a manifest (stage "reference-lm" or "quality-model") whose
inputs are the training files with their hashes, so the curate stage can take the folder as an
input and record exactly which model it filtered with. A rerun with the same files and settings
finds the finished folder and skips (`--force` retrains).
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
from pathlib import Path

from gristmill.manifests import RAW, Manifest, begin_stage, output_record, write_manifest

REFERENCE_STAGE = "reference-lm"
QUALITY_STAGE = "quality-model"


def _finish(start, outputs: list[tuple[str, str]], metrics: dict) -> Manifest:
    m = start.manifest
    m.outputs = [output_record(start.out_dir, path, kind) for path, kind in outputs]
    m.metrics = metrics
    write_manifest(start.out_dir, m)
    return m


def train_reference(text: list[Path], out: Path, *, order: int = 3, txt_docs: str = "line",
                    force: bool = False) -> Manifest:
    """Train the reference n-gram LM on `text` files into `out` (model.arpa + manifest.json)."""
    from gristmill.curate.perplexity import TOKENIZER, train_ngram
    from gristmill.curate.quality import read_texts

    config = {"order": order, "smoothing": "interpolated-modified-kneser-ney", "tokenizer": TOKENIZER,
              "txt_docs": txt_docs, "format": "arpa"}
    start = begin_stage(REFERENCE_STAGE, config, {"text": text}, out, expect={"text": (RAW,)}, force=force)
    if start.done:
        print(f"{out}: reference model already trained ({start.done.id}); --force retrains")
        return start.done
    info: dict = {}
    docs = itertools.chain.from_iterable(read_texts(p, txt_docs) for p in text)
    train_ngram(docs, start.out_dir / "model.arpa", order=order, info=info)
    m = _finish(start, [("model.arpa", "model")], info)
    print(f"{out}: {order}-gram model on {info['sentences']} sentences, {info['tokens']} tokens, "
          f"vocabulary {info['vocab']}, n-grams {info['ngrams']}")
    return m


def train_reference_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gristmill curate train-reference",
                                description="Train the n-gram reference LM (ARPA, interpolated modified Kneser-Ney) "
                                            "for the curate stage's perplexity filter.")
    p.add_argument("--text", nargs="+", required=True, type=Path, metavar="FILE",
                   help="clean reference text: .txt (one document per line), .jsonl(.gz/.zst) with a 'text' field")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    p.add_argument("--txt-docs", choices=("line", "paragraph"), default="line",
                   help=".txt files: one document per line (default) or per blank-line-separated paragraph")
    p.add_argument("--force", action="store_true", help="retrain even if the folder holds this exact model")
    a = p.parse_args(argv)
    if a.order < 1:
        p.error(f"--order {a.order}: must be >= 1")
    train_reference(a.text, a.out, order=a.order, txt_docs=a.txt_docs, force=a.force)
    return 0


def train_quality_folder(positive: list[Path], negative: list[Path], out: Path, *, force: bool = False,
                         **options) -> Manifest:
    """Train the fastText quality classifier into `out` (model.bin, metrics.json, manifest.json).

    `options` go to `quality.train_quality` (epochs, lr, wordNgrams, dim, bucket, min_count, seed,
    holdout, txt_docs, max_tokens) and into the manifest's config.
    """
    from gristmill.curate.quality import train_quality

    defaults = {k: v.default for k, v in inspect.signature(train_quality).parameters.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown train_quality option(s): {', '.join(unknown)}")
    config = {**defaults, **options, "labels": ["__label__hq", "__label__lq"]}
    start = begin_stage(QUALITY_STAGE, config, {"positive": positive, "negative": negative}, out,
                        expect={"positive": (RAW,), "negative": (RAW,)}, force=force)
    if start.done:
        print(f"{out}: quality model already trained ({start.done.id}); --force retrains")
        return start.done
    train_quality(positive, negative, start.out_dir, **options)
    metrics = json.loads((start.out_dir / "metrics.json").read_text(encoding="utf-8"))
    m = _finish(start, [("model.bin", "model"), ("metrics.json", "metrics")], metrics)
    acc = metrics.get("heldout_accuracy")
    print(f"{out}: quality classifier trained on {metrics['train_documents']}; held-out accuracy "
          f"{'n/a' if acc is None else f'{acc:.3f}'}")
    return m


def train_quality_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gristmill curate train-quality",
                                description="Train the fastText quality classifier (reference text = __label__hq, "
                                            "raw web text = __label__lq) for the curate stage's quality filter.")
    p.add_argument("--positive", nargs="+", required=True, type=Path, metavar="FILE",
                   help="reference-quality text: .txt (one document per line) or .jsonl(.gz/.zst) with 'text'")
    p.add_argument("--negative", nargs="+", required=True, type=Path, metavar="FILE", help="raw web text, same formats")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--bucket", type=int, default=200_000, help="hash buckets for word n-grams (model size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.1, help="share of each class held out for the metrics")
    p.add_argument("--txt-docs", choices=("line", "paragraph"), default="line",
                   help=".txt files: one document per line (default) or per blank-line-separated paragraph")
    p.add_argument("--force", action="store_true", help="retrain even if the folder holds this exact model")
    a = p.parse_args(argv)
    if a.epochs < 1 or a.dim < 1 or a.bucket < 0 or not 0.0 <= a.holdout < 1.0:
        p.error("--epochs and --dim must be >= 1, --bucket >= 0, --holdout in [0, 1)")
    train_quality_folder(a.positive, a.negative, a.out, force=a.force, epochs=a.epochs, lr=a.lr,
                         wordNgrams=a.word_ngrams, dim=a.dim, bucket=a.bucket, seed=a.seed, holdout=a.holdout,
                         txt_docs=a.txt_docs)
    return 0
