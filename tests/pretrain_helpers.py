"""Shared pieces of the pretrain tests: a learnable generated corpus, its tokenize folder, a tiny config."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from helpers import tokenized_dir

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
THINGS = ["apples", "books", "coins", "stones", "shells", "cards"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Documents of templated sentences: structure a 100k-parameter model learns in tens of steps."""
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        parts = []
        for _ in range(r.randint(3, 8)):
            a, b, k = r.choice(NAMES), r.choice(NAMES), r.randint(1, 9)
            parts.append(f"{a} gives {k} {r.choice(THINGS)} to {b}. then {b} counts {k} and says thank you to {a}.")
        docs.append(" ".join(parts))
    return docs


def make_tokens(path: Path) -> Path:
    """A finished tokenize folder (vocab <= 512, 10% val) of `corpus()`."""
    return tokenized_dir(path, corpus(), vocab_size=512, val_fraction=0.1)


TINY = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=176, seq_len=64, batch_size=8, max_steps=30,
            eval_every=10, eval_batches=2, device="cpu", optim={"warmup_steps": 5, "lr": 3e-3},
            checkpoint={"every": 5, "keep": 2}, spike={"window": 8})


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`; nested sections (optim, spike, checkpoint) are merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny(**overrides: Any):
    """A PretrainConfig for a ~125k-parameter model that trains in about a second per 30 steps.

    Sections are given as dicts: tiny(max_steps=16, optim={"lr": 2e-3}, checkpoint={"every": 4})."""
    from gristmill.config import build
    from gristmill.pretrain.config import PretrainConfig

    return build(PretrainConfig, merged(TINY, overrides), section="pretrain")


def rows(out: Path) -> dict[int, dict[str, Any]]:
    """metrics.jsonl of a pretrain folder as {step: last row for that step}."""
    last = {}
    for line in (Path(out) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        last[row["step"]] = row
    return last
