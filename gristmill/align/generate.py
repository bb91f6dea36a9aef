"""Generation for checks, judging and report samples: chat prompts, left-padded batches, greedy or seeded sampling, the new tokens decoded."""
from __future__ import annotations

from typing import Any

import torch

from gristmill.align.chat import encode_prompt, pad_id, stop_ids


def left_pad(encoded: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, T): prompts right-aligned so every row's next token sits at column T."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, e in enumerate(encoded):
        ids[r, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[r, width - len(e):] = 1
    return ids, mask


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[list[dict]], *, max_new_tokens: int, max_length: int,
             device: torch.device, batch_size: int = 16, sample_seed: int | None = None) -> list[str]:
    """Completions of chat prompts (message lists ending with a user turn), special tokens dropped: greedy,
    or sampled at temperature 1 when `sample_seed` is given (from a forked RNG seeded with it, so the
    caller's random state is left as it was and the samples are a function of the seed).

    Prompts are left-padded so that every row's next token sits at the same position; generation stops
    at the tokenizer's eos (the end-of-turn token for chat templates that end turns with it)."""
    was_training = model.training
    model.eval()
    pad = pad_id(tokenizer)
    stop = stop_ids(tokenizer)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad([encode_prompt(tokenizer, p, max_length=max_length) for p in prompts[i:i + batch_size]],
                             pad)
        width = ids.shape[1]
        sampling = {"do_sample": False} if sample_seed is None else {"do_sample": True, "temperature": 1.0,
                                                                     "top_p": 1.0, "top_k": 0}
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            if sample_seed is not None:
                torch.manual_seed(sample_seed + i)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **sampling,
                                 max_new_tokens=max_new_tokens, eos_token_id=stop or None, pad_token_id=pad)
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    model.train(was_training)
    return [s.strip() for s in out]
