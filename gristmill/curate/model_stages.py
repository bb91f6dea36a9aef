"""The stages that build curate's models: "reference-lm" (n-gram ARPA) and "quality-model" (fastText).

A recipe trains them from its own data and hands the folders to curate (roles "reference" and
"quality"). The commands in tools.py run these same functions from flags."""
from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

from gristmill.config import to_dict
from gristmill.curate import CurateError
from gristmill.curate.config import QualityModelConfig, ReadersConfig, ReferenceConfig
from gristmill.manifests import RAW, Manifest, begin_stage, output_record, write_manifest

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")


def run_reference(config: ReferenceConfig, inputs: dict[str, list[Path]], out_dir: Path, *,
                  force: bool = False) -> Manifest:
    """inputs["text"]: clean reference text (.txt one document per line, or .jsonl with "text")."""
    from gristmill.curate.perplexity import train_ngram
    from gristmill.curate.quality import read_texts

    start = begin_stage("reference-lm", to_dict(config), inputs, out_dir, expect={"text": (RAW,)}, force=force)
    if start.done:
        return start.done
    texts = [Path(p) for p in inputs.get("text", [])]
    if not texts:
        raise CurateError("reference-lm needs --text FILE... (clean reference text)")
    info: dict = {}
    docs = itertools.chain.from_iterable(read_texts(p, config.txt_docs) for p in texts)
    train_ngram(docs, start.out_dir / "model.arpa", order=config.order, info=info)
    m = start.manifest
    m.outputs = [output_record(start.out_dir, "model.arpa", "model")]
    m.metrics = info
    write_manifest(start.out_dir, m)
    return m


def _web_negatives(paths: list[Path], out: Path, limit: int) -> int:
    """Raw web text from dumps: every HTML page extracted (no filtering), one JSONL row {"text"} per page.

    JSONL, not .txt: read_texts reads .txt by the stage's txt_docs, and in paragraph mode a file of
    one page per line is a single block, i.e. one document for all the pages."""
    from gristmill.curate.config import ExtractionConfig
    from gristmill.curate.extract import Extractor
    from gristmill.curate.readers import plan_units, read_unit

    readers = ReadersConfig()
    ex = Extractor(ExtractionConfig())
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for unit in plan_units(paths, readers):
            for rec in read_unit(unit, readers):
                if rec.drop or not rec.content:
                    continue
                text = ex.extract(rec.content)[0] if rec.is_html else rec.content
                if text and text.strip():
                    f.write(json.dumps({"text": text}) + "\n")
                    n += 1
                    if n >= limit:
                        return n
    return n


def run_quality_model(config: QualityModelConfig, inputs: dict[str, list[Path]], out_dir: Path, *,
                      force: bool = False) -> Manifest:
    """inputs["positive"]: reference-quality text files; inputs["negative"]: raw web text files, or web
    dumps (WARC / .html / Parquet) whose pages are extracted unfiltered as the negatives; optional
    inputs["reference"]: a reference LM whose perplexity joins the quality score (score.py)."""
    from gristmill.curate.quality import train_quality

    start = begin_stage("quality-model", to_dict(config), inputs, out_dir,
                        expect={"positive": (RAW,), "negative": (RAW,), "reference": ("reference-lm", RAW)},
                        force=force)
    if start.done:
        return start.done
    pos = [Path(p) for p in inputs.get("positive", [])]
    neg = [Path(p) for p in inputs.get("negative", [])]
    if not pos or not neg:
        raise CurateError("quality-model needs positive (reference text) and negative (raw web) inputs")
    text_neg = [p for p in neg if p.is_file() and p.name.lower().endswith(TEXT_SUFFIXES)]
    dumps = [p for p in neg if p not in text_neg]
    with tempfile.TemporaryDirectory(dir=start.out_dir, prefix=".negatives-") as td:
        if dumps:
            web = Path(td) / "web-negatives.jsonl"
            if _web_negatives(dumps, web, config.max_negative_documents) == 0:
                raise CurateError(f"no text could be extracted from {', '.join(map(str, dumps))} for negatives")
            text_neg.append(web)
        train_quality(pos, text_neg, start.out_dir, epochs=config.epochs, lr=config.lr, wordNgrams=config.word_ngrams,
                      dim=config.dim, bucket=config.bucket, seed=config.seed, holdout=config.holdout,
                      txt_docs=config.txt_docs, reference=(inputs.get("reference") or [None])[0])
    m = start.manifest
    m.outputs = [output_record(start.out_dir, "model.bin", "model"), output_record(start.out_dir, "metrics.json",
                                                                                    "metrics")]
    if (start.out_dir / "combiner.json").is_file():
        m.outputs.append(output_record(start.out_dir, "combiner.json", "combiner"))
    m.metrics = json.loads((start.out_dir / "metrics.json").read_text(encoding="utf-8"))
    write_manifest(start.out_dir, m)
    return m
