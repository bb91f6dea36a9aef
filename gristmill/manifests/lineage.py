"""Walk input manifests from a stage folder back to the raw inputs, and print the chain."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gristmill.manifests.store import resolve_input_path
from gristmill.manifests.schema import MANIFEST_NAME, Manifest
from gristmill.manifests.store import manifest_path, read_manifest

# Metrics worth a glance in a lineage line, in this order, when a stage reports them.
KEY_METRICS = ("records_read", "kept", "documents", "tokens", "train_tokens", "final_train_loss", "val_loss",
               "val_perplexity", "eval_loss", "answer_accuracy", "reward_accuracy", "win_rate", "mean_reward")


@dataclass
class Node:
    path: Path  # the stage folder, or the raw input's path
    manifest: Manifest | None  # None for raw inputs
    role: str = "output"
    raw_sha256: str | None = None
    parents: list["Node"] = field(default_factory=list)


def lineage(path: str | Path) -> Node:
    """The tree of manifests behind a stage folder; raw inputs are leaves."""
    mp = manifest_path(path)
    return _walk(mp, "output", seen=set())


def _walk(mp: Path, role: str, seen: set[Path]) -> Node:
    m = read_manifest(mp)
    node = Node(path=mp.parent, manifest=m, role=role)
    key = mp.resolve()
    if key in seen:  # a cycle cannot be written by gristmill, but a hand-edited manifest can make one
        return node
    seen = seen | {key}
    for rec in m.inputs:
        target = resolve_input_path(mp.parent, rec)
        if rec.stage is not None:
            tmp = target if target.name == MANIFEST_NAME else target / MANIFEST_NAME
            if tmp.is_file():
                node.parents.append(_walk(tmp, rec.role, seen))
                continue
        node.parents.append(Node(path=target, manifest=None, role=rec.role, raw_sha256=rec.sha256))
    return node


def _metrics_summary(metrics: dict[str, Any]) -> str:
    parts = []
    for k in KEY_METRICS:
        v = metrics.get(k)
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, str)):
            parts.append(f"{k}={v}")
    return " ".join(parts)


def format_lineage(node: Node) -> str:
    """One line per stage, newest first, indented by depth: id, stage, created, key metrics."""
    lines: list[str] = []

    def emit(n: Node, depth: int) -> None:
        pad = "  " * depth
        if n.manifest is None:
            lines.append(f"{pad}raw {n.role}: {n.path} sha256={n.raw_sha256[:16] if n.raw_sha256 else '?'}")
            return
        m = n.manifest
        lines.append(f"{pad}{m.id}  {m.stage:<13} {m.created}  {_metrics_summary(m.metrics)}".rstrip()
                     + f"  ({n.path})")
        for p in n.parents:
            emit(p, depth + 1)

    emit(node, 0)
    return "\n".join(lines)
