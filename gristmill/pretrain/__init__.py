"""The pretrain stage: token shards -> a Llama-architecture base model in a plain Hugging Face folder.

Entry point: `gristmill.pretrain.run.run_pretrain`. Modules: config (knobs and size presets),
model, data (windows and their order), schedule (LR), spikes (detection and the recovery ladder),
checkpoint, evaluate, parallel (torchrun / DDP / FSDP2), loop (the training loop), plots, run.
"""
from gristmill.errors import GristmillError


class PretrainError(GristmillError):
    """A pretrain run that cannot go on as configured; the message says what to change."""
