"""The one generation engine: chat prompts in left-padded batches, greedy or seeded sampling; texts for checks, judging and samples, token ids with log-probs for RL rollouts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from gristmill.align import AlignError
from gristmill.align.chat import IGNORE, Encoded, encode_prompt, pad_id, stop_ids

# The largest |sampling - training| log-prob a rollout token may show (check_recomputed): fp32 on one device
# agrees to ~1e-5; beyond 1e-3 the two forwards are not the same model.
LOGP_TOLERANCE = 1e-3


def left_pad(encoded: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, T): prompts right-aligned so every row's next token sits at column T."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, e in enumerate(encoded):
        ids[r, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[r, width - len(e):] = 1
    return ids, mask


def _batches(model: Any, tok: Any, encoded: list[list[int]], *, batch_size: int, seed: int | None,
             device: torch.device | str, **generate_kw: Any) -> Iterator[tuple[list[list[int]], Any, int]]:
    """(prompt rows, generate's output, prompt width) per batch of `batch_size` encoded prompts, in eval mode
    (restored after). Sampling runs under an RNG forked and seeded with `seed` + the batch's first index, so
    the caller's random state is untouched and a resumed run samples the same; seed None = greedy."""
    was = model.training
    model.eval()
    pad, stops = pad_id(tok), stop_ids(tok)
    sampling = {"do_sample": False} if seed is None else {"do_sample": True, "top_k": 0}
    try:
        for i in range(0, len(encoded), batch_size):
            rows = encoded[i:i + batch_size]
            ids, mask = left_pad(rows, pad)
            with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
                if seed is not None:
                    torch.manual_seed(seed + i)
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **sampling,
                                     eos_token_id=stops or None, pad_token_id=pad, **generate_kw)
            yield rows, gen, ids.shape[1]
    finally:
        model.train(was)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[list[dict]], *, max_new_tokens: int, max_length: int,
             device: torch.device, batch_size: int = 16, sample_seed: int | None = None) -> list[str]:
    """Completions of chat prompts (message lists ending with a user turn), special tokens dropped: greedy,
    or sampled at temperature 1 when `sample_seed` is given (the samples are then a function of the seed).
    Generation stops at the tokenizer's eos (the end-of-turn token for chat templates that end turns with it)."""
    encoded = [encode_prompt(tokenizer, p, max_length=max_length) for p in prompts]
    kw = {} if sample_seed is None else {"temperature": 1.0, "top_p": 1.0}
    out: list[str] = []
    for _, gen, width in _batches(model, tokenizer, encoded, batch_size=batch_size, seed=sample_seed, device=device,
                                  max_new_tokens=max_new_tokens, **kw):
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return [s.strip() for s in out]


@dataclass
class Rollout:
    """Samples in prompt order, the k samples of a prompt contiguous."""
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # the sampled tokens, through the end token when one was sampled
    logps: list[list[float]]  # log π(token) at the sampling temperature, one per response token
    finished: list[bool]  # False: hit max_new_tokens without an end token

    def groups(self, k: int) -> list[list[Encoded]]:
        """Each prompt's k samples as one group for layout/logprobs: the prompt shared, the responses labelled."""
        seqs = [Encoded(p + r, [IGNORE] * len(p) + r) for p, r in zip(self.prompt_ids, self.response_ids)]
        return [seqs[i:i + k] for i in range(0, len(seqs), k)]


@torch.no_grad()
def sample(model: Any, tok: Any, prompts: list[list[dict]], *, k: int, max_new_tokens: int, max_length: int,
           temperature: float, top_p: float, seed: int, device: torch.device | str,
           batch_size: int = 16) -> Rollout:
    """k samples for each chat prompt, seeded like `generate`, with their log-probs.

    The log-probs are of the model's own distribution at `temperature` (log_softmax(logits / T)), read
    from the raw logits generate returns, not from its top-p-truncated scores: they are what the training
    forward recomputes."""
    stops = stop_ids(tok)
    encoded = [encode_prompt(tok, p, max_length=max_length) for p in prompts for _ in range(k)]
    out = Rollout([], [], [], [])
    for rows, gen, width in _batches(model, tok, encoded, batch_size=batch_size, seed=seed, device=device,
                                     temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                     output_logits=True, return_dict_in_generate=True):
        new = gen.sequences[:, width:].cpu()  # (B, S)
        # One step at a time: a (B, S, V) log_softmax would hold another copy of every step's logits.
        tok_logp = torch.empty(new.shape, dtype=torch.float32)  # (B, S)
        for s, step in enumerate(gen.logits):  # (B, V) raw logits of step s
            z = step.float() / temperature
            tok_logp[:, s] = (z.gather(-1, new[:, s:s + 1].to(z.device))[:, 0] - z.logsumexp(-1)).cpu()
        for r, e in enumerate(rows):
            seq = new[r].tolist()
            end = next((j + 1 for j, t in enumerate(seq) if t in stops), None)
            n = end if end is not None else len(seq)
            out.prompt_ids.append(list(e))
            out.response_ids.append(seq[:n])
            out.logps.append(tok_logp[r, :n].tolist())
            out.finished.append(end is not None)
    return out


def check_recomputed(sampled: list[list[float]], recomputed: torch.Tensor, *, tol: float = LOGP_TOLERANCE) -> float:
    """The largest |sampling log-prob - training-forward log-prob| over every response token; above `tol`
    an AlignError that says why it matters: the policy ratio of the first PPO epoch would not start at 1,
    so clipping and the KL estimate would act on a numerical difference, not on learning (a mismatched
    padding side, position ids, dtype or attention implementation between generate and the forward)."""
    flat = torch.tensor([x for row in sampled for x in row], dtype=torch.float32)
    if flat.shape != recomputed.shape:
        raise AlignError(f"{flat.numel()} sampled log-probs but {recomputed.numel()} recomputed ones")
    worst = (flat - recomputed.float().cpu()).abs().max().item() if flat.numel() else 0.0
    if worst > tol:
        raise AlignError(f"the training forward recomputes the sampled tokens' log-probs up to {worst:.2e} apart "
                         f"(tolerance {tol:.0e}): generation and training do not compute the same model; check "
                         "the dtype, the attention implementation and the padding of both")
    return worst
