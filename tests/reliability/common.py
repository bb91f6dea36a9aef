"""The reliability suite's shared pieces: the tiny recipe, a run folder with demo data, the CLI as a subprocess, output hashes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECIPE = HERE / "tiny.toml"
STAGES = ["curate", "tokenize", "pretrain", "sft", "reward", "dpo", "ppo"]  # tiny.toml's [run] stages, in order
PAGES = 40  # demo web pages: ~94 WARC records, enough for every stage to have data, curate in seconds


def env() -> dict[str, str]:
    """One thread per op: concurrent multi-threaded CPU runs differ at fp32 rounding, and bit-identity is the test."""
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
    return e


def gristmill_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "gristmill", *map(str, args)]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float


def run_cli(*args: str | Path, cwd: Path, timeout: float = 600) -> Result:
    """`gristmill ARGS` in a subprocess with the deterministic environment; its exit code and output."""
    t0 = time.monotonic()
    p = subprocess.run(gristmill_cmd(*args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                       errors="replace")
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def new_run(folder: Path, pages: int = PAGES) -> Path:
    """A run folder holding the demo data (RUN/data) that tiny.toml reads."""
    from gristmill.demo import write_demo_data

    write_demo_data(folder / "data", pages=pages)
    return folder


def output_hashes(run_dir: Path, stages: list[str] = STAGES) -> dict[str, dict[str, str]]:
    """stage -> {"id": manifest id, output path: sha256} over the outputs a manifest does not mark as
    wall-clock dependent (timings.jsonl, report.md carry seconds; they are marked deterministic=False).
    Compare runs made in the same folder path: curate's ledger records each record's source path."""
    from gristmill.manifests import read_manifest

    out = {}
    for s in stages:
        m = read_manifest(run_dir / s)
        out[s] = {"id": m.id} | {o.path: o.sha256 for o in m.outputs
                                 if o.deterministic is not False}
    return out


def diff_hashes(ref: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> list[str]:
    """Every (stage, output) whose hash differs from the reference or is missing on one side."""
    diffs = []
    for s in ref:
        a, b = ref[s], got.get(s, {})
        diffs += [f"{s}/{k}: {a.get(k, 'missing')[:12]} != {b.get(k, 'missing')[:12]}"
                  for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return diffs
