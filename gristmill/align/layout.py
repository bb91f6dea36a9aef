"""Rows of sequence groups: a group's shared prefix once, then each sequence's own tail, masked so tails see only the prefix and themselves."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gristmill.align.packing import pack


@dataclass
class Layout:
    batch: dict[str, torch.Tensor]  # input_ids, position_ids (R, T); attention_mask (R, 1, T, T) bool, True = may attend
    index: list[list[int]]  # per sequence (groups in order, then their members), each token's flat position in (R * T)
    tokens: int  # real tokens laid out (a shared prefix counts once)


def shared_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token of its own (its last
    token is where a score is read, and each tail must hold something to mask)."""
    if len(seqs) < 2:
        return 0
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for i in range(max(n, 0)):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return max(n, 0)


def lay_out_groups(groups: list[list[list[int]]], *, pad_id: int, max_length: int, packed: bool) -> Layout:
    """Each group (e.g. a pair's chosen and rejected, or k samples for one prompt) as [prefix | tail 1 | tail 2 ...].

    Tail k's tokens sit at positions len(prefix), len(prefix)+1, ... and attend to the prefix and to the
    earlier tokens of tail k only, so every sequence computes exactly what it would alone, while the
    prefix (the prompt: often most of the tokens of a preference pair) is computed once. packed=True
    puts several groups in a row of max_length tokens (best fit; a group longer than that gets a row of
    its own); packed=False one group per row. Rows are right-padded; a pad token attends to itself only.
    """
    shapes = []  # (prefix length, tail lengths) per group
    for g in groups:
        if not g or any(not s for s in g):
            raise ValueError("every group needs at least one non-empty sequence")
        p = shared_prefix(g)
        shapes.append((p, [len(s) - p for s in g]))
    sizes = [p + sum(tails) for p, tails in shapes]
    rows = pack(sizes, max(max_length, *sizes)) if packed else [[i] for i in range(len(groups))]
    width = max(sum(sizes[i] for i in row) for row in rows)  # T

    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    group = torch.full((len(rows), width), -1, dtype=torch.long)
    branch = torch.zeros((len(rows), width), dtype=torch.long)  # 0 = prefix (or pad), k = the k-th tail
    index: list[list[int] | None] = [None] * len(groups)
    for r, row in enumerate(rows):
        t = 0
        for gi in row:
            p, tails = shapes[gi]
            seqs = groups[gi]
            ids[r, t:t + p] = torch.tensor(seqs[0][:p], dtype=torch.long)
            positions[r, t:t + p] = torch.arange(p)
            group[r, t:t + sizes[gi]] = gi
            prefix_at = list(range(r * width + t, r * width + t + p))
            t += p
            members = []
            for k, (s, n) in enumerate(zip(seqs, tails), start=1):
                ids[r, t:t + n] = torch.tensor(s[p:], dtype=torch.long)
                positions[r, t:t + n] = torch.arange(p, p + n)
                branch[r, t:t + n] = k
                members.append(prefix_at + list(range(r * width + t, r * width + t + n)))
                t += n
            index[gi] = members
        pads = width - t
        positions[r, t:] = torch.arange(pads)
        group[r, t:] = -2 - torch.arange(pads)  # each pad alone in its group
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    mask = ((group[:, :, None] == group[:, None, :]) & causal
            & ((branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])))  # (R, T, T) query x key
    flat = [idx for members in index for idx in members]  # type: ignore[union-attr]
    return Layout(batch={"input_ids": ids, "position_ids": positions, "attention_mask": mask[:, None]},
                  index=flat, tokens=sum(sizes))
