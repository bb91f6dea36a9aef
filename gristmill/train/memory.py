"""Memory controls: gradient checkpointing for any model the stages train, and peak memory (CUDA max allocated, or max RSS).

`enable_gradient_checkpointing(model)` works on a transformers model (pretrain's LlamaForCausalLM, an
AutoModelForCausalLM or AutoModelForSequenceClassification) and on the same wrapped by peft (LoRA). Each
decoder block keeps only its input in the forward and recomputes its activations in the backward: the
loss and the gradients are the same (the recompute replays the block's dropout RNG), and what autograd
keeps for the backward drops from ~30 (B, T, H)-sized tensors per block to one (SmolLM2-135M, LoRA,
4 x 512 tokens: 4.7 GB -> 0.14 GB, plus the vocabulary head's). The forward runs twice, ~1/3 more
compute per step in theory.

Two things differ from `model.gradient_checkpointing_enable()` alone:

- non-reentrant checkpointing (`use_reentrant=False`): gradients reach LoRA adapters behind frozen
  embeddings without `enable_input_require_grads`, and keyword arguments pass through;
- it also checkpoints in eval mode. transformers checkpoints a block only `if self.gradient_checkpointing
  and self.training`, but PPO trains with its policy and value model in eval mode, so that dropout
  cannot make the training forward disagree with sampling. Switching the blocks to train mode would turn
  LoRA and attention dropout back on, so each block gets an instance-level `forward` that checkpoints
  whenever gradients are being recorded and no KV cache is passed; in train mode it defers to
  transformers' own wrapper. Generation (no_grad, or with a cache) runs the blocks as before.

On CPU, peak RSS is also the allocator's: `return_freed_memory()` makes glibc give freed activations back
(with gradient checkpointing, one step's peak on SmolLM2 drops from 4.3-6.8 GB to 1.5-2.0 GB).
`peak_memory_mb(device)` is what the stages record.
"""
from __future__ import annotations

import functools
import inspect
import os
import resource
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CACHE_KWARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


def _hf_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (adapters injected in it), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def checkpointed_layers(model: Any) -> list[torch.nn.Module]:
    """The blocks that checkpoint their activations (transformers' GradientCheckpointingLayer with the flag on)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in _hf_model(model).modules()
            if isinstance(m, GradientCheckpointingLayer) and getattr(m, "gradient_checkpointing", False)]


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute every decoder block's activations in the backward pass, in train and in eval mode.

    `model`: a transformers PreTrainedModel, or one wrapped by peft. Idempotent. While gradients are
    recorded, the decoder gets use_cache=False (a forward that leaves it unset would otherwise build a KV
    cache from config.use_cache, which the recompute would fill twice); the config itself is left alone,
    so the saved folder is the same bytes as without checkpointing. Generation (no_grad) is unaffected.
    """
    hf = _hf_model(model)
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x; gradient_checkpointing_enable warns
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    layers = checkpointed_layers(hf)
    if not layers:
        raise ValueError(f"{type(hf).__name__}: gradient checkpointing found no decoder block to checkpoint")
    for layer in layers:
        if "forward" not in vars(layer):  # already wrapped: idempotent
            layer.forward = functools.partial(_forward_any_mode, layer, type(layer).forward)
    for m in hf.modules():  # the decoder (LlamaModel): its own flag, set by transformers beside the blocks'
        if (getattr(m, "gradient_checkpointing", False) and m not in layers and not getattr(m, "_gm_no_cache", False)
                and "use_cache" in inspect.signature(m.forward).parameters):
            m.register_forward_pre_hook(_no_cache_while_training, with_kwargs=True)
            m._gm_no_cache = True


def _no_cache_while_training(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """use_cache=False for a decoder forward that records gradients and brings no cache of its own."""
    import torch

    if torch.is_grad_enabled() and module.gradient_checkpointing and not any(
            kwargs.get(k) is not None for k in CACHE_KWARGS):
        kwargs["use_cache"] = False
    return args, kwargs


def _forward_any_mode(layer: torch.nn.Module, cls_forward: Any, *args: Any, **kwargs: Any) -> Any:
    """A block's forward that checkpoints in eval mode too (transformers' own wrapper does in train mode)."""
    import torch

    if (layer.training or not layer.gradient_checkpointing or not torch.is_grad_enabled()
            or any(kwargs.get(k) is not None for k in CACHE_KWARGS)):
        return cls_forward(layer, *args, **kwargs)
    return layer._gradient_checkpointing_func(functools.partial(cls_forward, layer, **kwargs), *args)


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory of this process so far, MB (2**20 bytes): torch.cuda.max_memory_allocated on a CUDA
    device (tensors only: the caching allocator's reserve and the CUDA context are not in it), else the
    maximum resident set size (everything the process touched: weights, activations, allocator caches,
    Python, libraries)."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """On glibc (Linux CPU training): serve every allocation of `threshold` bytes or more with its own mmap,
    given back to the system when freed, and have torch back such blocks with transparent huge pages. True
    when the threshold was set. Call it before the process's first large torch allocation (before loading a
    model): torch reads THP_MEM_ALLOC_ENABLE once, at that allocation.

    glibc's default starts the threshold at 128 KB and raises it (up to 32 MB) each time such a block is
    freed; from then on every activation tensor comes from the heap, and the freed activations of one layer
    stay resident as holes that later allocations do not fit. One reward-model step on SmolLM2-135M (LoRA,
    gradient checkpointing, 4 rows x 1,024 tokens, one thread): peak RSS 6.8 GB and 67 CPU s by default;
    1.5 GB but 94 CPU s with the threshold at 1 MB (every fresh mapping is page-faulted 4 KB at a time);
    1.5 GB and 66 CPU s with the threshold and huge pages (THP_MEM_ALLOC_ENABLE=1: torch aligns blocks of
    2 MB and more to 2 MB and madvises MADV_HUGEPAGE, 512 x fewer faults). Same as starting the process
    with MALLOC_MMAP_THRESHOLD_=threshold THP_MEM_ALLOC_ENABLE=1. Numbers are unaffected: it changes where
    memory comes from, not what is computed. No-op elsewhere (macOS, musl; CUDA memory is torch's own),
    and a MALLOC_MMAP_THRESHOLD_ / THP_MEM_ALLOC_ENABLE the process was started with stands. Imports no
    torch: a CLI can call it first thing."""
    if not sys.platform.startswith("linux"):
        return False
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
