"""Training data: windows of seq_len + 1 tokens cut from token shards, in an order fixed by (seed, position, rank).

The train stream is divided into windows of `seq_len + 1` tokens with stride `seq_len` (each
token is a target exactly once per epoch; a window never crosses a shard). A run consumes
windows through a global cursor: every optimizer step takes the next `global_batch` positions,
and position p means window `perm_e[p % W]` with epoch e = p // W and `perm_e` a permutation
seeded by (seed, e). A step's windows are therefore a pure function of (seed, cursor, rank), and
the cursor is step * global_batch plus the windows skipped by rollbacks (recorded as events).
Within a step, rank r takes the r-th contiguous slice, so DDP ranks never share a window, and one
process with the same global batch sees exactly the same windows.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np


class TokenWindows:
    """Windows of `seq_len + 1` tokens over a list of 1-D token arrays (memmaps or in-memory)."""

    def __init__(self, shards: Sequence[np.ndarray], seq_len: int):
        self.shards = list(shards)
        self.seq_len = seq_len
        counts = [max(0, (len(s) - 1) // seq_len) for s in self.shards]  # windows per shard
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # first global window of each shard
        self.num_windows = int(self.starts[-1])

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), seq_len + 1) int64 tokens of the windows with these global indices."""
        shard = np.searchsorted(self.starts, ids, side="right") - 1
        offset = (ids - self.starts[shard]) * self.seq_len
        t1 = self.seq_len + 1
        return np.stack([np.asarray(self.shards[s][o:o + t1], dtype=np.int64) for s, o in zip(shard, offset)])


@lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_windows: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_windows)


def window_ids(seed: int, start: int, count: int, num_windows: int) -> np.ndarray:
    """Global window indices for cursor positions [start, start + count)."""
    pos = np.arange(start, start + count, dtype=np.int64)
    epoch, within = np.divmod(pos, num_windows)
    out = np.empty(count, dtype=np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = _epoch_permutation(seed, int(e), num_windows)[within[sel]]
    return out


class TrainBatches:
    """The micro-batches one rank trains on at a given cursor position."""

    def __init__(self, windows: TokenWindows, *, seed: int, batch_size: int, grad_accum: int,
                 rank: int = 0, world_size: int = 1):
        if windows.num_windows == 0:
            raise ValueError(f"no training window of {windows.seq_len + 1} tokens fits in the train shards")
        self.windows, self.seed = windows, seed
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.rank, self.world_size = rank, world_size
        self.per_rank = batch_size * grad_accum
        self.global_batch = self.per_rank * world_size  # windows consumed per optimizer step

    def micro_batches(self, cursor: int) -> list[np.ndarray]:
        """grad_accum arrays of (batch_size, seq_len + 1) int64 for the step that starts at `cursor`."""
        ids = window_ids(self.seed, cursor + self.rank * self.per_rank, self.per_rank, self.windows.num_windows)
        tokens = self.windows.gather(ids)
        return [tokens[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.grad_accum)]


def val_batches(windows: TokenWindows, *, count: int, batch_size: int, rank: int = 0,
                world_size: int = 1) -> list[np.ndarray]:
    """This rank's micro-batches of the fixed validation set: `count` windows spread evenly over the val stream.

    The set depends on `count` alone, not on how many processes share it; ranks split it evenly
    (collective forwards under FSDP need equal batch counts). Empty when no whole window fits.
    """
    n = min(count, windows.num_windows) // world_size * world_size
    if n == 0:
        return []
    ids = np.linspace(0, windows.num_windows - 1, n).round().astype(np.int64)  # distinct: n <= num_windows
    mine = ids[rank * n // world_size:(rank + 1) * n // world_size]
    return [windows.gather(mine[i:i + batch_size]) for i in range(0, len(mine), batch_size)]
