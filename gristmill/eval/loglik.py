"""Log-likelihood scoring: an example's candidates laid out after their shared context once, packed across examples, one forward per batch.

Each example is a group of token sequences (a question's choices, a schema's contexts) and the span of each
whose log-probs count. `align/layout.py` puts a group's common token prefix once in a row and each sequence's
own tail after it, masked so that a tail sees only the prefix and itself: every candidate computes exactly what
it would alone, while a 10-shot context shared by four choices is computed once instead of four times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gristmill.align.layout import lay_out_groups, shared_prefix
from gristmill.align.logprobs import _parts
from gristmill.eval.prompts import Scorable

ROW_TOKENS = 512  # a packed row's width: long enough to hold a few examples, short enough that the dense
# (T, T) attention mask of a row (which covers other examples' tokens too) costs little next to the MLPs
HEAD_ROWS = 1024  # span positions per LM-head call: 1024 x 49,152 fp32 logits are 200 MB (SmolLM2's vocabulary)


@dataclass
class Candidate:
    ids: list[int]  # the whole sequence, context then continuation
    start: int  # the scored span: ids[start:] (each token predicted from the one before it)


@dataclass
class Score:
    logprob: float  # summed over the span, nats
    tokens: int  # span length
    greedy: bool  # every span token is the model's argmax


def encode_pair(tok: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """(ids of context + continuation, where the continuation starts): lm-evaluation-harness's split. Trailing
    spaces of the context move to the continuation ("Answer:" + " Paris", not "Answer: " + "Paris", which BPE
    would tokenise as an unnatural lone space), then the continuation is what the whole string has past the
    context's own tokens."""
    n = len(context) - len(context.rstrip(" "))
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"] if context else []
    return whole, len(ctx)


def candidates(tok: Any, s: Scorable, *, bos: int | None, shared: bool) -> list[Candidate]:
    """The token sequences of one example. `bos` is prepended when given (CORE does; so does an empty context,
    with the tokenizer's BOS or EOS, since the first token needs something to be predicted from).

    shared=True is CORE's span rule: multiple choice scores each choice after the candidates' longest common
    token prefix, a schema scores the common token suffix (the shared continuation); otherwise the span is
    what follows the context's tokens."""
    seqs = []
    for ctx, cont in zip(s.contexts, s.continuations):
        ids, start = encode_pair(tok, ctx, cont)
        if bos is not None:
            ids, start = [bos] + ids, start + 1
        seqs.append(Candidate(ids, start))
    if shared and len(seqs) > 1:
        if len(set(s.contexts)) == 1:  # multiple choice: after the common prefix
            p = _common_prefix([c.ids for c in seqs])
            seqs = [Candidate(c.ids, min(max(p, 1), len(c.ids) - 1)) for c in seqs]
        else:  # schema: the common suffix
            k = _common_prefix([c.ids[::-1] for c in seqs])
            seqs = [Candidate(c.ids, max(len(c.ids) - max(k, 1), 1)) for c in seqs]
    for c in seqs:
        if c.start < 1:  # nothing before the first continuation token: predict it from BOS / EOS
            raise ValueError("a candidate's span starts at its first token; pass bos")
    return seqs


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


def truncate_left(c: Candidate, max_length: int) -> tuple[Candidate, bool]:
    """A sequence longer than the window loses tokens from its left: the start of the context, and when the
    continuation alone does not fit, its own first tokens too (lm-evaluation-harness keeps the last
    max_length + 1 tokens the same way); the first token kept is never scored, it has nothing before it."""
    cut = len(c.ids) - max_length
    if cut <= 0:
        return c, False
    return Candidate(c.ids[cut:], max(c.start - cut, 1)), True


@torch.no_grad()
def score_groups(model: Any, groups: list[list[Candidate]], *, pad_id: int, batch_size: int,
                 device: torch.device, progress: Callable[[int], None] = lambda n: None) -> list[list[Score]]:
    """Every candidate's span log-prob and greedy match. Groups are sorted by length and packed into rows of
    ROW_TOKENS (a longer group gets its own row), `batch_size` rows per forward; results come back in order."""
    decoder, head = _parts(model)
    out: list[list[Score] | None] = [None] * len(groups)
    order = sorted(range(len(groups)), key=lambda g: -sum(len(c.ids) for c in groups[g]))
    budget = batch_size * ROW_TOKENS
    i = 0
    while i < len(order):
        chunk, size = [], 0
        while i < len(order) and (not chunk or size + _size(groups[order[i]]) <= budget):
            chunk.append(order[i])
            size += _size(groups[order[i]])
            i += 1
        for g, scores in zip(chunk, _score_chunk(decoder, head, [groups[g] for g in chunk], pad_id, device)):
            out[g] = scores
        progress(len(chunk))
    return out  # type: ignore[return-value]


def _size(group: list[Candidate]) -> int:
    """Tokens a group takes in a row: its shared prefix once (as lay_out_groups lays it), then each tail."""
    p = shared_prefix([c.ids for c in group])
    return p + sum(len(c.ids) - p for c in group)


def _score_chunk(decoder: Any, head: Any, groups: list[list[Candidate]], pad_id: int,
                 device: torch.device) -> list[list[Score]]:
    lay = lay_out_groups([[c.ids for c in g] for g in groups], pad_id=pad_id, max_length=ROW_TOKENS, packed=True)
    pos: list[int] = []  # flat (R * T) positions whose logits predict a span token
    target: list[int] = []
    owner: list[int] = []
    flat = [c for g in groups for c in g]
    for s, (c, index) in enumerate(zip(flat, lay.index)):
        js = range(c.start, len(c.ids))
        pos += [index[j - 1] for j in js]
        target += [c.ids[j] for j in js]
        owner += [s] * len(js)
    batch = {k: v.to(device) for k, v in lay.batch.items()}
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], use_cache=False).last_hidden_state  # (R, T, H)
    flat_hidden = hidden.flatten(0, 1)[torch.tensor(pos, device=device)]  # (N, H): span positions only
    tgt = torch.tensor(target, device=device)
    logp = torch.empty(len(pos), device=device)
    hit = torch.empty(len(pos), device=device)
    for a in range(0, len(pos), HEAD_ROWS):  # (HEAD_ROWS, V) fp32 logits at a time, not (N, V)
        logits = head(flat_hidden[a:a + HEAD_ROWS]).float()
        logp[a:a + HEAD_ROWS] = -F.cross_entropy(logits, tgt[a:a + HEAD_ROWS], reduction="none")
        hit[a:a + HEAD_ROWS] = (logits.argmax(-1) == tgt[a:a + HEAD_ROWS]).float()
    who = torch.tensor(owner, device=device)
    sums = torch.zeros(len(flat), device=device, dtype=torch.float64).index_add(0, who, logp.double())
    misses = torch.zeros(len(flat), device=device).index_add(0, who, 1.0 - hit)
    sums, misses = sums.tolist(), misses.tolist()  # .tolist() syncs once per batch
    scores = [Score(sums[s], len(c.ids) - c.start, misses[s] == 0) for s, c in enumerate(flat)]
    out, k = [], 0
    for g in groups:
        out.append(scores[k:k + len(g)])
        k += len(g)
    return out
