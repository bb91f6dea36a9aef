"""`gristmill curate train-reference` and `train-quality`: the model stages of model_stages.py, from flags.

Each flag is a field of the stage's config dataclass, so the command, a recipe section and the
manifest all speak the same names, and a folder trained here has the same id as one a recipe
trains from the same files and settings (a rerun finds it finished; `--force` retrains).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Callable

from gristmill.config import build
from gristmill.curate.config import QualityModelConfig, ReferenceConfig
from gristmill.manifests import MANIFEST_NAME, Manifest


def _add_config_flags(p: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, choices=choices,
                       type=None if choices else tp, help=f"default {f.default!r}")


def _run(argv: list[str], *, prog: str, description: str, cls: type, stage: str,
         roles: dict[str, str], run: Callable[..., Manifest], optional: tuple[str, ...] = ()) -> int:
    p = argparse.ArgumentParser(prog=prog, description=description)
    for role, helptext in roles.items():
        p.add_argument(f"--{role}", nargs="+", required=role not in optional, type=Path, metavar="FILE",
                       help=helptext)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="retrain even if the folder holds this exact model")
    _add_config_flags(p, cls)
    a = p.parse_args(argv)
    names = {f.name for f in dataclasses.fields(cls)}
    config = build(cls, {k: v for k, v in vars(a).items() if k in names and v is not None}, section=stage)
    mp = a.out / MANIFEST_NAME
    before = mp.stat().st_mtime_ns if mp.is_file() else None
    m = run(config, {role: getattr(a, role) for role in roles if getattr(a, role) is not None}, a.out, force=a.force)
    if before is not None and mp.stat().st_mtime_ns == before:
        print(f"{a.out}: {stage} already trained ({m.id}); --force retrains")
    else:
        print(f"{a.out}: {stage} {m.id} " + " ".join(f"{k}={v}" for k, v in m.metrics.items()
                                                      if isinstance(v, (int, float, str))))
    return 0


def train_reference_main(argv: list[str]) -> int:
    from gristmill.curate.model_stages import run_reference

    return _run(argv, prog="gristmill curate train-reference", cls=ReferenceConfig, stage="reference-lm",
                description="Train the n-gram reference LM (ARPA, interpolated modified Kneser-Ney) for the "
                            "curate stage's perplexity filter.",
                roles={"text": "clean reference text: .txt (one document per line), .jsonl(.gz/.zst) with 'text'"},
                run=run_reference)


def train_quality_main(argv: list[str]) -> int:
    from gristmill.curate.model_stages import run_quality_model

    return _run(argv, prog="gristmill curate train-quality", cls=QualityModelConfig, stage="quality-model",
                description="Train the fastText quality classifier (reference text = __label__hq, raw web "
                            "text = __label__lq) for the curate stage's quality filter.",
                roles={"positive": "reference-quality text: .txt (one document per line) or .jsonl with 'text'",
                       "negative": "raw web text (.txt / .jsonl), or web dumps whose pages are extracted",
                       "reference": "optional: a reference LM (train-reference folder) whose perplexity joins the "
                                    "quality score; curate must then be given the same one"},
                run=run_quality_model, optional=("reference",))
