"""sha256 of files and folders, streamed in chunks so a 10 GB shard never sits in memory."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB reads: large enough to keep hashlib busy, small enough to stay flat in memory


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(path: str | Path) -> tuple[str, int]:
    """Hash of a folder: sha256 over sorted `relpath\\0sha256\\n` lines. Returns (hash, total bytes).

    Hidden files and __pycache__ are skipped so that a user's editor or Python itself does not
    change a raw input's identity.
    """
    root = Path(path)
    h = hashlib.sha256()
    total = 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{sha256_file(p)}\n".encode())
        total += p.stat().st_size
    return h.hexdigest(), total
