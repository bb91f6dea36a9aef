"""Batching: pack examples into rows (positions reset, no attention across examples) or pad them; the tensors a forward takes."""
from __future__ import annotations

import bisect
from typing import Any

import torch

from gristmill.align import AlignError
from gristmill.align.chat import IGNORE, Encoded


def pack(lengths: list[int], max_length: int) -> list[list[int]]:
    """Example indices per row, no row over max_length tokens: best-fit decreasing.

    Longest first (ties by index), each into the row with the least room that still fits it, else a new
    row; a pure function of its arguments. O(n log n) search (the room list insert is a memmove).
    """
    for i, n in enumerate(lengths):
        if not 1 <= n <= max_length:
            raise AlignError(f"example {i} has {n} tokens; packing needs 1..max_length={max_length} "
                             "(encode_chat truncates to max_length)")
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row), sorted: the best fit is the first with enough room
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        k = bisect.bisect_left(room, (lengths[i], -1))
        if k == len(room):
            rows.append([i])
            free, r = max_length - lengths[i], len(rows) - 1
        else:
            free, r = room.pop(k)
            rows[r].append(i)
            free -= lengths[i]
        bisect.insort(room, (free, r))
    return rows


def lay_out(seqs: list[list[int]], rows: list[list[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor, dict[int, int]]:
    """The sequences of each row of `rows` (indices into `seqs`) side by side, the rows right-padded.

    Returns input_ids, position_ids (restarting at 0 with each sequence; padding counts up as one more)
    and real (1 on sequence tokens), each (R, T) with T the longest row, and {sequence index: its start
    as a flat index into the (R * T) view}.
    """
    width = max(sum(len(seqs[i]) for i in row) for row in rows)  # T
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = torch.zeros((len(rows), width), dtype=torch.long)
    starts: dict[int, int] = {}
    for r, row in enumerate(rows):
        t = 0
        for i in row:
            n = len(seqs[i])
            ids[r, t:t + n] = torch.tensor(seqs[i])
            positions[r, t:t + n] = torch.arange(n)
            real[r, t:t + n] = 1
            starts[i] = r * width + t
            t += n
        positions[r, t:] = torch.arange(width - t)
    return ids, positions, real, starts


def collate(examples: list[Encoded], *, pad_id: int, packed: bool, rows: list[list[int]] | None = None,
            device: torch.device | str | None = None) -> dict[str, Any]:
    """The keyword arguments of `model(**batch)` plus "labels" (unshifted: the loss takes logits[:, :-1]
    against labels[:, 1:]). Labels are IGNORE on padding and on every example's first token, so that in a
    packed row the last token of one example is never trained to predict the first of the next.

    packed=False: one example per row, right-padded: input_ids, attention_mask (1 real, 0 pad), labels,
    position_ids (B, T).
    packed=True: the examples of each row of `rows` (indices into `examples`, as `pack` gives; default:
    all in one row, i.e. padding-free) side by side, the rows right-padded: input_ids, labels,
    position_ids (R, T), positions restarting at 0 with each example (padding counts up as one more).
    There is deliberately no attention_mask: given position_ids that restart, no 2D mask and no cache,
    transformers (masking_utils.find_packed_sequence_indices) builds the block-diagonal causal mask for
    sdpa / eager / flex, and flash-attention takes its varlen path. A 2D attention_mask or a KV cache turns
    that detection off without a word (the examples would then attend to each other), hence use_cache=False
    in the batch: the model's config default (True) would create a cache.
    """
    if packed:
        rows = rows if rows is not None else [list(range(len(examples)))]
    else:
        if rows is not None:
            raise ValueError("rows is for packed=True")
        rows = [[i] for i in range(len(examples))]
    ids, positions, real, starts = lay_out([e.input_ids for e in examples], rows, pad_id=pad_id)
    labels = torch.full_like(ids, IGNORE)
    flat = labels.view(-1)  # (R * T)
    for i, start in starts.items():
        e = examples[i]
        if len(e.labels) != len(e.input_ids):
            raise ValueError(f"an example has {len(e.input_ids)} input ids but {len(e.labels)} labels")
        flat[start + 1:start + len(e.labels)] = torch.tensor(e.labels[1:])  # the first token is never a target
    batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "position_ids": positions}
    if not packed:
        batch["attention_mask"] = real
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    batch["use_cache"] = False
    return batch
