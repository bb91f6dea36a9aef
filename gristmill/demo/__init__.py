"""The built-in synthetic demo data: a web dump (WARC + ground truth), clean reference text and task data."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from gristmill.demo import web
from gristmill.demo.tasks import check_answer, expected_answer, write_task_data

__all__ = ["write_demo_data", "check_answer", "expected_answer"]


def write_demo_data(out_dir: Path, *, pages: int = 400, seed: int = 0) -> dict:
    """Write the demo data set into `out_dir` and return its summary (also `summary.json`).

    `pages` is the number of HTML pages in the dump (articles, duplicates, junk); images, PDFs,
    metadata, revisit records and the one broken record come on top. Everything is a function of
    (`pages`, `seed`) only: the same arguments give byte-identical files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Separate streams per part, so changing one part's generator leaves the others unchanged.
    web_rng = random.Random(f"gristmill-demo/{seed}/web")
    ref_rng = random.Random(f"gristmill-demo/{seed}/reference")
    task_rng = random.Random(f"gristmill-demo/{seed}/tasks")

    specs = web.build_pages(pages, web_rng)
    tmp = out_dir / "web.warc.gz.tmp"
    truth = web.write_warc(tmp, specs, web_rng)
    os.replace(tmp, out_dir / "web.warc.gz")
    _write_lines(out_dir / "truth.jsonl", [json.dumps(t, ensure_ascii=False) for t in truth])

    (out_dir / "reference").mkdir(exist_ok=True)
    n_ref = web.write_reference(out_dir / "reference" / "clean.txt", max(20, pages // 4), ref_rng)
    # Clean text no stage reads: what `gristmill ablate` scores the raw-text and curated-text models on.
    n_held = web.write_reference(out_dir / "reference" / "heldout.txt", max(5, pages // 16),
                                 random.Random(f"gristmill-demo/{seed}/heldout"))

    task_counts = write_task_data(out_dir, pages, task_rng)

    summary = {"seed": seed, "pages": pages, "records": len(truth) + 1,  # + warcinfo
               **web.count_truth(truth),
               "reference_paragraphs": n_ref, "heldout_paragraphs": n_held, "task_records": task_counts,
               "files": ["web.warc.gz", "truth.jsonl", "reference/clean.txt", "reference/heldout.txt",
                         *sorted(task_counts), "summary.json"]}
    _write_lines(out_dir / "summary.json", [json.dumps(summary, indent=2, ensure_ascii=False)])
    return summary


def _write_lines(path: Path, lines: list[str]) -> None:
    """Write through a temporary name so a crash never leaves a half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
