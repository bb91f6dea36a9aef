"""Training data: windows of seq_len + 1 tokens cut from token shards, in an order fixed by (seed, position, rank).

The train stream is divided into windows of `seq_len + 1` tokens with stride `seq_len` (each
token is a target exactly once per epoch; a window never crosses a shard). A run consumes
windows through a global cursor: every optimizer step takes the next `global_batch` positions,
and position p means window `perm_e[p % W]` with epoch e = p // W and `perm_e` a permutation
seeded by (seed, e). A step's windows are therefore a pure function of (seed, cursor, rank), and
the cursor is step * global_batch plus the windows skipped by rollbacks (recorded as events).
Within a step, rank r takes the r-th contiguous slice, so DDP ranks never share a window, and one
process with the same global batch sees exactly the same windows.

Several sources (a data mixture): cursor positions come in blocks of MIX_BLOCK; each block holds
each source's quota (its weight x MIX_BLOCK, rounded by largest remainder) in an order shuffled by
(seed, block). Position p is then the k-th draw of source s, k counted in closed form, and source s
maps k to its own windows as above (its own permutations; a source that runs out starts another
epoch). Still a pure function of (seed, cursor, rank); one source is exactly the single-stream order.
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


@lru_cache(maxsize=8)
def _epoch_permutation(seed: int | tuple[int, int], epoch: int, num_windows: int) -> np.ndarray:
    key = [seed, epoch] if isinstance(seed, int) else [*seed, epoch]
    return np.random.default_rng(key).permutation(num_windows)


MIX_BLOCK = 1000  # cursor positions per mixture block: weights are kept to 1 / MIX_BLOCK


class Mixture:
    """Which source, and which of its draws, each cursor position is (see the module docstring)."""

    def __init__(self, weights: Sequence[float], seed: int) -> None:
        w = np.asarray(weights, dtype=np.float64)
        raw = w / w.sum() * MIX_BLOCK
        quota = np.floor(raw).astype(np.int64)
        for i in np.argsort(-(raw - quota), kind="stable")[:MIX_BLOCK - int(quota.sum())]:
            quota[i] += 1  # largest remainder: the quotas sum to MIX_BLOCK
        self.quota, self.seed = quota, seed

    @lru_cache(maxsize=8)
    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each slot, draws of that source before the slot within the block), each (MIX_BLOCK,)."""
        slots = np.repeat(np.arange(len(self.quota)), self.quota)
        if len(self.quota) > 1:  # one source: slot j is its j-th draw, the single-stream order exactly
            slots = np.random.default_rng([self.seed, b, 0x5EED]).permutation(slots)
        before = np.zeros(MIX_BLOCK, dtype=np.int64)
        for s in range(len(self.quota)):
            mine = slots == s
            before[mine] = np.arange(int(mine.sum()))
        return slots, before

    def locate(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, its draw number) of each cursor position."""
        block, j = np.divmod(pos, MIX_BLOCK)
        src, k = np.empty_like(pos), np.empty_like(pos)
        for b in np.unique(block):
            sel = block == b
            slots, before = self._block(int(b))
            src[sel] = slots[j[sel]]
            k[sel] = int(b) * self.quota[slots[j[sel]]] + before[j[sel]]
        return src, k

    def draws(self, cursor: int) -> np.ndarray:
        """(sources,) windows each source has given for positions [0, cursor)."""
        b, j = divmod(cursor, MIX_BLOCK)
        slots, _ = self._block(b)
        return b * self.quota + np.bincount(slots[:j], minlength=len(self.quota))


def window_ids(seed: int, start: int, count: int, num_windows: int) -> np.ndarray:
    """Global window indices for cursor positions [start, start + count)."""
    return windows_at(seed, np.arange(start, start + count, dtype=np.int64), num_windows)


def windows_at(seed: int | tuple[int, int], pos: np.ndarray, num_windows: int) -> np.ndarray:
    """Window indices for stream positions `pos` (any order): epoch p // W, permuted by (seed, epoch)."""
    epoch, within = np.divmod(pos, num_windows)
    out = np.empty(len(pos), dtype=np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = _epoch_permutation(seed, int(e), num_windows)[within[sel]]
    return out


class TrainBatches:
    """The micro-batches one rank trains on at a given cursor position, from one source or a mixture."""

    def __init__(self, windows: TokenWindows | Sequence[TokenWindows], *, seed: int, batch_size: int, grad_accum: int,
                 rank: int = 0, world_size: int = 1, weights: Sequence[float] | None = None):
        self.sources = [windows] if isinstance(windows, TokenWindows) else list(windows)
        for w in self.sources:
            if w.num_windows == 0:
                raise ValueError(f"no training window of {w.seq_len + 1} tokens fits in the train shards")
        self.windows = self.sources[0]
        self.mixture = Mixture(weights or [1.0] * len(self.sources), seed)
        self.seed = seed
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.rank, self.world_size = rank, world_size
        self.per_rank = batch_size * grad_accum
        self.global_batch = self.per_rank * world_size  # windows consumed per optimizer step

    def micro_batches(self, cursor: int) -> list[np.ndarray]:
        """grad_accum arrays of (batch_size, seq_len + 1) int64 for the step that starts at `cursor`."""
        start = cursor + self.rank * self.per_rank
        pos = np.arange(start, start + self.per_rank, dtype=np.int64)
        src, k = self.mixture.locate(pos)
        tokens = np.empty((self.per_rank, self.windows.seq_len + 1), dtype=np.int64)
        for s, w in enumerate(self.sources):
            sel = src == s
            if sel.any():  # source 0 keeps the single-stream seed: one source = the old order, bit for bit
                tokens[sel] = w.gather(windows_at(self.seed if s == 0 else (self.seed, s), k[sel], w.num_windows))
        return [tokens[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.grad_accum)]

    def seen(self, cursor: int) -> list[int]:
        """Windows taken from each source at positions [0, cursor)."""
        return self.mixture.draws(cursor).tolist()


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
