"""Atomic file and folder writes (temporary name, fsync, rename) and canonical JSON."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _current_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def canonical_json(obj: Any) -> str:
    """The one serialisation that ids are computed over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`; on success fsync and rename over it.

    A crash leaves either the old file or none, never half a file. The temporary name starts
    with '.' so folder hashes and globs do not pick it up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: str | Path) -> None:
    """Flush a file or a folder to disk; a rename is durable only once its folder entry is flushed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data itself was flushed
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n")


@contextmanager
def atomic_folder(folder: str | Path, *, tmp: str | Path | None = None) -> Iterator[Path]:
    """Build a folder under a hidden temporary name; on success fsync every file and rename it into place.

    A crash leaves the old folder (or none), never half a new one; an existing `folder` is replaced.
    `tmp`: a fixed temporary path (cleared first), for writers that other steps fill by name;
    default a fresh hidden sibling. The temporary folder is removed when the body raises.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        os.chmod(work, 0o777 & ~_UMASK)  # mkdtemp makes it private (0700); the folder is meant to be shared
    else:
        work = Path(tmp)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    try:
        yield work
        for f in sorted(work.rglob("*")):
            fsync_path(f)
        fsync_path(work)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        os.replace(work, folder)
        fsync_path(folder.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
