"""Output-folder locks: one gristmill process writes a run or stage folder at a time (flock on FOLDER/.gristmill.lock).

Two runs into the same folder would interleave checkpoints, shards and manifests; the second one
is refused up front with one line naming the folder and the process that holds it. The lock is
`fcntl.flock` on an open file, so the kernel drops it when the holder exits for any reason (kill -9
included): a crash never leaves a stale lock to delete by hand. The file stays (removing it would
let a third process lock a fresh file while a second still holds the old one); it holds the
holder's pid and command while locked, and is emptied on release. Its name starts with a dot, so
folder hashing (manifests/hashing.py) ignores it. POSIX only (Linux, macOS), like the rest of the
toolkit's process handling.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from gristmill.errors import GristmillError

LOCK_NAME = ".gristmill.lock"
_HELD: dict[Path, int] = {}  # folders this process holds -> nesting depth (`gristmill demo` locks, then its run does)


class FolderBusy(GristmillError):
    """Another process holds the folder's lock: it is writing there now."""


def _holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    return text or "pid unknown (it has just started)"


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, command: str) -> Iterator[Path | None]:
    """Hold `folder`'s lock for the body, or raise FolderBusy at once (never waits).

    `command` says what holds it (e.g. "gristmill run recipes/demo.toml"); the error a second process
    gets quotes it with the pid. Under torchrun only rank 0 locks: the ranks of one job share its
    folders (each writes its own part, rank 0 the manifest), and a lock per rank would refuse its own
    job. A path that is a file is left to the command's own check (it says "that is a file").
    """
    folder = Path(folder)
    if os.environ.get("RANK", "0") != "0" or (folder.exists() and not folder.is_dir()):
        yield None
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = folder.resolve()
    if key in _HELD:  # held by this process already: flock on a second descriptor would refuse ourselves
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{folder} is in use by another gristmill process ({_holder(fd)}); wait for it "
                             f"to finish or stop it, or give another --out (lock: {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield path
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)  # still locked here: no other process reads a half-cleared holder
    finally:
        os.close(fd)  # releases the flock
