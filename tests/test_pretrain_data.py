"""Training windows: contents, an order that is a pure function of (seed, cursor, rank), disjoint DDP ranks, fixed val."""
from __future__ import annotations

import numpy as np

from gristmill.pretrain.data import TokenWindows, TrainBatches, val_batches, window_ids


def shards():
    # Two shards of distinct ids so every window can be traced back to where it came from.
    return [np.arange(0, 1000, dtype=np.uint16), np.arange(1000, 1301, dtype=np.uint16)]


def test_windows_are_slices_of_seq_len_plus_one_with_stride_seq_len():
    w = TokenWindows(shards(), seq_len=16)
    assert w.num_windows == (1000 - 1) // 16 + (301 - 1) // 16  # 62 + 18; none crosses a shard
    got = w.gather(np.arange(w.num_windows))
    assert got.shape == (80, 17) and got.dtype == np.int64
    assert np.array_equal(got[0], np.arange(0, 17)) and np.array_equal(got[61], np.arange(976, 993))
    assert np.array_equal(got[62], np.arange(1000, 1017))  # first window of the second shard
    assert np.all(np.diff(got, axis=1) == 1)  # contiguous, never crossing a shard boundary
    # consecutive windows overlap by one token: every token is a target exactly once per epoch
    assert np.array_equal(got[1:62, 0], got[:61, -1])


def test_order_is_a_pure_function_and_a_permutation_per_epoch():
    n = 80
    a = window_ids(seed=3, start=0, count=2 * n, num_windows=n)
    assert np.array_equal(a, window_ids(seed=3, start=0, count=2 * n, num_windows=n))
    # any sub-range recomputed on its own gives the same windows (the cursor alone decides)
    assert np.array_equal(a[57:133], window_ids(seed=3, start=57, count=76, num_windows=n))
    assert sorted(a[:n]) == list(range(n)) and sorted(a[n:]) == list(range(n))
    assert not np.array_equal(a[:n], a[n:])  # each epoch reshuffles
    assert not np.array_equal(a, window_ids(seed=4, start=0, count=2 * n, num_windows=n))


def test_ddp_ranks_are_disjoint_and_together_equal_one_process():
    w = TokenWindows(shards(), seq_len=16)
    single = TrainBatches(w, seed=1, batch_size=8, grad_accum=1)
    ranks = [TrainBatches(w, seed=1, batch_size=2, grad_accum=2, rank=r, world_size=2) for r in range(2)]
    assert single.global_batch == ranks[0].global_batch == 8
    for cursor in (0, 8, 72, 160):  # across an epoch boundary too (80 windows)
        one = np.concatenate(single.micro_batches(cursor))
        per_rank = [np.concatenate(r.micro_batches(cursor)) for r in ranks]
        firsts = [set(x[:, 0].tolist()) for x in per_rank]
        assert firsts[0].isdisjoint(firsts[1])
        assert np.array_equal(np.concatenate(per_rank), one)
        assert all(len(mb) == 2 for r in ranks for mb in r.micro_batches(cursor))


def test_val_batches_are_fixed_spread_and_the_same_set_for_any_process_count():
    w = TokenWindows(shards(), seq_len=16)
    one = val_batches(w, count=12, batch_size=4)
    assert [b.shape for b in one] == [(4, 17)] * 3
    again = val_batches(w, count=12, batch_size=4)
    assert all(np.array_equal(a, b) for a, b in zip(one, again))
    starts = np.concatenate(one)[:, 0]
    assert starts[0] == 0 and starts[-1] == 1000 + 17 * 16  # first and last windows: spread over the stream
    two = [val_batches(w, count=12, batch_size=2, rank=r, world_size=2) for r in range(2)]
    s0, s1 = (set(np.concatenate(b)[:, 0].tolist()) for b in two)
    assert s0.isdisjoint(s1) and len(two[0]) == len(two[1]) == 3
    assert s0 | s1 == set(starts.tolist())  # two ranks evaluate exactly the single process's windows
    # too little val data: no batches rather than an error
    assert val_batches(TokenWindows([np.arange(10)], seq_len=16), count=8, batch_size=4) == []
