"""Progress: a progress line on stderr for the eval stage's long loops (examples done, rate, ETA)."""
from __future__ import annotations

import math
import sys
import time


class Progress:
    """A progress line on stderr with the rate and ETA: redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.done, self.t0 = name, total, 0, time.perf_counter()
        self.tty, self.next_mark = sys.stderr.isatty(), 0.1

    def update(self, n: int) -> None:
        self.done += n
        frac = self.done / max(self.total, 1)
        if not self.tty and frac < self.next_mark and self.done < self.total:
            return
        self.next_mark = math.floor(frac * 10) / 10 + 0.1
        dt = time.perf_counter() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = f"[eval] {self.name}: {self.done}/{self.total} examples ({rate:.1f}/s, ETA {eta:.0f} s)"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)
