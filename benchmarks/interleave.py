"""Interleaved rounds for the benchmarks: side order per round (AB, then BA), wall + CPU timing, median (min-max) ratios.

On a shared machine one pass per side is not enough (the same script gave 0.55x and 1.11x minutes
apart): every benchmark runs its sides in rounds, alternating who goes first, and reports the median
ratio over rounds with its range, for wall time and for CPU time side by side (CPU time is what other
load on the machine moves least; wall time is what a user waits for).
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def round_order(sides: Sequence[T], rnd: int) -> list[T]:
    """The sides in round rnd's order (rnd from 0): as given in even rounds, reversed in odd ones, so with
    two sides A, B the runs go A B | B A | A B ... and neither always runs first (warm caches, load)."""
    return list(sides) if rnd % 2 == 0 else list(reversed(sides))


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process this process has waited for (and of their own
    waited-for children: worker pools a child joins are included). Take the difference around a
    subprocess.run / Popen.wait to get that run's CPU."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def adopt_orphans() -> bool:
    """Make this process the subreaper of its descendants (Linux prctl PR_SET_CHILD_SUBREAPER): a process
    whose parent exits without waiting for it (multiprocessing's forkserver, which has reaped the pool's
    workers) is then reparented here, and reap_orphans() adds its CPU to children_cpu_s() instead of it
    being lost to init. False where prctl is not available (the CPU of such processes is then missing)."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans(timeout_s: float = 5.0) -> None:
    """Wait for every remaining child of this process (orphans adopted under adopt_orphans, already sent a
    kill or about to exit), for at most timeout_s seconds, so their CPU reaches children_cpu_s()."""
    import os

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left
        if pid == 0:
            time.sleep(0.02)


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """fn() run in this process: (its result, wall seconds, CPU seconds of this process: all its threads,
    plus any child processes it waited for)."""
    w0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu_s()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0 + children_cpu_s() - k0


def spread(xs: Sequence[float], fmt: str = ".2f") -> str:
    """'median (min-max)' of per-round ratios, with an x: '1.23x (1.10-1.31)'."""
    return f"{statistics.median(xs):{fmt}}x ({min(xs):{fmt}}-{max(xs):{fmt}})"
