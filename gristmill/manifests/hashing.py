"""sha256 of files and folders, streamed in chunks so a 10 GB shard never sits in memory, and a cache of them by file stat."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB reads: large enough to keep hashlib busy, small enough to stay flat in memory
CACHE_NAME = ".gristmill-hashes.json"
VERIFY_ENV = "GRISTMILL_VERIFY_INPUTS"  # set (to 1) by --verify-inputs: no cached hash is trusted


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(path: str | Path, cache: HashCache | None = None) -> tuple[str, int]:
    """Hash of a folder: sha256 over sorted `relpath\\0sha256\\n` lines. Returns (hash, total bytes).

    Hidden files and __pycache__ are skipped so that a user's editor or Python itself does not
    change a raw input's identity (nor does the hash cache, a hidden file). `cache`: file hashes come
    from it (see HashCache).
    """
    root = Path(path)
    h = hashlib.sha256()
    total = 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{cache.sha256(p) if cache else sha256_file(p)}\n".encode())
        total += p.stat().st_size
    return h.hexdigest(), total


def full_hashing() -> bool:
    """True under --verify-inputs (GRISTMILL_VERIFY_INPUTS=1 in the environment, so torchrun's ranks see it too)."""
    return os.environ.get(VERIFY_ENV, "") not in ("", "0")


class HashCache:
    """sha256 of files, remembered in `folder/.gristmill-hashes.json` by (size, mtime_ns, inode) of each file.

    Stage starts and the planner check their inputs through it: a file whose stat has not changed since
    it was hashed is not read again (re-hashing costs ~1 s/GB at every start, on every rank). A rewrite
    that keeps size, mtime and inode (e.g. an edit whose mtime is set back) is not seen: `gristmill
    manifest verify` and `--verify-inputs` hash every byte (`trust=False`, or full_hashing()), and
    refresh the cache as they go. Saving is best effort: a read-only folder is simply not cached.
    """

    def __init__(self, folder: str | Path, *, trust: bool = True) -> None:
        self.path = Path(folder) / CACHE_NAME
        self.trust = trust and not full_hashing()
        self.entries: dict[str, dict] = {}
        self.hashed = 0  # files read in full by this instance (tests and reports)
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self.entries = data["files"]
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: hash everything and write a new one

    def sha256(self, file: str | Path) -> str:
        st = os.stat(file)
        key, stamp = os.path.realpath(file), [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if self.trust and entry and entry.get("stat") == stamp:
            return entry["sha256"]
        digest = sha256_file(file)
        self.hashed += 1
        if entry != (new := {"stat": stamp, "sha256": digest}):
            self.entries[key], self._dirty = new, True
        return digest

    def remember(self, file: str | Path, digest: str) -> None:
        """Record a hash computed elsewhere (a stage's writer hashing its own outputs)."""
        st = os.stat(file)
        self.entries[os.path.realpath(file)] = {"stat": [st.st_size, st.st_mtime_ns, st.st_ino], "sha256": digest}
        self._dirty = True

    def save(self) -> None:
        if not self._dirty or not self.path.parent.is_dir():
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "files": self.entries}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            tmp.unlink(missing_ok=True)
