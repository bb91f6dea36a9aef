"""Sequence scores from a reward model: groups of sequences laid out with their shared prefix once, scored at each one's last token."""
from __future__ import annotations


import torch

from gristmill.align import AlignError
from gristmill.align.layout import lay_out_groups


def collate_groups(groups: list[list[list[int]]], *, pad_id: int, max_length: int, packed: bool,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The keyword arguments of `SequenceScorer` for groups of sequences (layout.lay_out_groups: a pair's
    chosen and rejected share their prompt's tokens), plus "last": each sequence's last token as a flat
    index into (R * T), groups in order and their members in order."""
    lay = lay_out_groups(groups, pad_id=pad_id, max_length=max_length, packed=packed)
    batch = lay.batch | {"last": torch.tensor([idx[-1] for idx in lay.index], dtype=torch.long)}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def _parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, score head) of a transformers *ForSequenceClassification, or of its peft wrapper (whose
    adapters live inside the decoder and whose trainable score copy sits behind the same attribute)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    head = getattr(inner, "score", None)
    if decoder is None or head is None:
        raise AlignError(f"{type(inner).__name__} has no decoder + `score` head; the reward stage needs a "
                         "transformers *ForSequenceClassification model (or --set reward.packing=false)")
    return decoder, head


class SequenceScorer(torch.nn.Module):
    """A reward model's forward as one module (so DDP wraps exactly this call): (N,) fp32 scores.

    Equal to the model's own forward on each sequence alone (the score head read at its last token), but
    it takes packed rows with shared prefixes and a 4D mask, where that forward would read one score per
    row, and it runs the head only on the N last hidden states.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        _parts(model)  # fail at construction, not at the first step

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                last: torch.Tensor) -> torch.Tensor:
        decoder, head = _parts(self.model)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # (R, T, H), after the final norm
        return head(hidden.flatten(0, 1)[last]).squeeze(-1).float()  # (N,)
