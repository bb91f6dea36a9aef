"""The align stages' batch source: items (rows, pairs) in an order fixed by (seed, cursor, rank), collated per micro-batch."""
from __future__ import annotations

from typing import Any, Callable

from gristmill.pretrain.data import window_ids


class ItemBatches:
    """Like pretrain's TrainBatches over `num_items` items: each epoch is a permutation seeded by (seed, epoch);
    step s on rank r takes the r-th contiguous slice of positions [cursor, cursor + global_batch), cut
    into grad_accum micro-batches of batch_size items, each turned into tensors by `collate(indices)`.
    So a step's data is a pure function of (seed, cursor, rank) and resume replays it exactly.
    """

    def __init__(self, num_items: int, collate: Callable[[list[int]], Any], *, seed: int, batch_size: int,
                 grad_accum: int, rank: int = 0, world_size: int = 1):
        if num_items == 0:
            raise ValueError("no training items")
        self.num_items, self.collate, self.seed = num_items, collate, seed
        self.batch_size, self.grad_accum, self.rank = batch_size, grad_accum, rank
        self.per_rank = batch_size * grad_accum
        self.global_batch = self.per_rank * world_size  # items consumed per optimizer step
        self.served: list[int] = []  # item indices handed out, in order (replays after a rollback included)

    def steps_per_epoch(self) -> int:
        return -(-self.num_items // self.global_batch)

    def micro_batches(self, cursor: int) -> list[Any]:
        ids = window_ids(self.seed, cursor + self.rank * self.per_rank, self.per_rank, self.num_items).tolist()
        self.served += ids
        return [self.collate(ids[i:i + self.batch_size]) for i in range(0, len(ids), self.batch_size)]
