"""Completion log-probs: each labelled token's log-prob from one forward over groups laid out with their shared prompt, summed per sequence in fp32."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gristmill.align import AlignError
from gristmill.align.chat import IGNORE, Encoded
from gristmill.align.layout import lay_out_groups


def collate_logps(groups: list[list[Encoded]], *, pad_id: int, max_length: int, packed: bool,
                  device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The keyword arguments of `TokenLogps` for groups of encoded sequences (a pair's chosen and rejected),
    plus "owner" (N,): which sequence each target belongs to (groups in order, then their members), and
    "tokens" (S,): each sequence's number of targets.

    Targets are the labelled tokens (labels != IGNORE), except a sequence's first token; each is read
    from the logits at the position of the token before it *in its own sequence* — for the first token
    of a tail that is the prefix's last position, not the physically adjacent token of another tail.
    """
    lay = lay_out_groups([[e.input_ids for e in g] for g in groups], pad_id=pad_id, max_length=max_length,
                         packed=packed)
    pos: list[int] = []
    target: list[int] = []
    owner: list[int] = []
    tokens: list[int] = []
    for s, (e, index) in enumerate(zip((e for g in groups for e in g), lay.index)):
        js = [j for j in range(1, len(e.labels)) if e.labels[j] != IGNORE]
        if not js:
            raise AlignError(f"sequence {s} of the batch has no labelled token after its first; encode_chat "
                             "refuses such examples, so this is a bug in the caller")
        pos += [index[j - 1] for j in js]
        target += [e.labels[j] for j in js]
        owner += [s] * len(js)
        tokens.append(len(js))
    batch = lay.batch | {"pos": torch.tensor(pos), "target": torch.tensor(target), "owner": torch.tensor(owner),
                         "tokens": torch.tensor(tokens)}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def _parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, lm head) of a transformers *ForCausalLM, or of its peft wrapper (adapters inside)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise AlignError(f"{type(inner).__name__} has no decoder + output embeddings; preference training needs "
                         "a transformers *ForCausalLM model")
    if getattr(inner.config, "final_logit_softcapping", None):
        raise AlignError(f"{type(inner).__name__} soft-caps its logits, which this log-prob path does not "
                         "apply; such models are not supported yet")
    return decoder, head


class TokenLogps(torch.nn.Module):
    """A causal LM's forward as one module (so DDP wraps exactly this call): (N,) fp32 log-probs of the
    batch's targets, the head run only at the N positions that predict them (not (R, T, V)); at a sampling
    temperature other than 1 (RL), of log_softmax(logits / temperature)."""

    def __init__(self, model: torch.nn.Module, *, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature
        _parts(model)  # fail at construction, not at the first step

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                pos: torch.Tensor, target: torch.Tensor, with_entropy: bool = False) -> Any:
        """(N,) log-probs; with_entropy: also (N,) entropies of the distributions they come from (nats)."""
        decoder, head = _parts(self.model)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # (R, T, H)
        logits = head(hidden.flatten(0, 1)[pos]).float()  # (N, V), fp32
        if self.temperature != 1.0:  # x / 1 is x: skip the (N, V) copy (DPO, the judge, the reference)
            logits = logits / self.temperature
        logp = -F.cross_entropy(logits, target, reduction="none")  # (N,)
        if not with_entropy:
            return logp
        lsm = logits.log_softmax(-1)
        return logp, -(lsm.exp() * lsm).sum(-1)


def sequence_logps(module: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums, means), each (S,): every sequence's completion log-prob, summed and per target token."""
    token = module(**{k: batch[k] for k in ("input_ids", "position_ids", "attention_mask", "pos", "target")})
    sums = torch.zeros(batch["tokens"].shape[0], dtype=token.dtype, device=token.device)
    sums = sums.index_add(0, batch["owner"], token)
    return sums, sums / batch["tokens"]
