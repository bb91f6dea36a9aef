"""Processes and devices: torchrun setup (gloo on CPU, NCCL on GPU), DDP / FSDP2 wrapping, collectives, full state dicts."""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class Parallel:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we started the process group, so we end it
    fsdp: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Parallel:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); start the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("pretrain.device='cuda' but torch sees no CUDA device")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30),
                                device_id=dev if use_cuda else None)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Parallel(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)


def teardown(par: Parallel) -> None:
    if par.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Parallel]:
    """setup() ... teardown(), with a barrier on a clean exit: a rank that tore its gloo pairs down
    while another still finished its last broadcast made that one abort ("terminate called without
    an active exception", seen in CI). On an error the barrier is skipped (the others may be gone)."""
    par = setup(device)
    try:
        yield par
        barrier(par)
    finally:
        teardown(par)


def barrier(par: Parallel) -> None:
    if par.distributed:
        dist.barrier()


def wrap(model: torch.nn.Module, par: Parallel, *, fsdp: bool, compile: bool) -> torch.nn.Module:
    """The module to call in the loop: the model itself, compiled, and/or under DDP or FSDP2.

    FSDP2 shards every decoder layer and then the root in place (the model's class changes), so
    the returned module is the model itself; its state dicts then need full_state / load_state.
    """
    model.to(par.device)
    if par.distributed and fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        par.fsdp = True
    if compile:
        model = torch.compile(model)
    if par.distributed and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[par.device.index] if par.device.type == "cuda" else None)
    return model


@contextlib.contextmanager
def no_grad_sync(model: torch.nn.Module, skip: bool) -> Iterator[None]:
    """Within grad accumulation, reduce gradients across ranks only on the last micro-batch."""
    if not skip:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def mean_across(par: Parallel, t: torch.Tensor) -> torch.Tensor:
    if par.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= par.world_size
    return t


def sum_across(par: Parallel, t: torch.Tensor) -> torch.Tensor:
    if par.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def on_main(par: Parallel, fn: Callable[[], T]) -> T | None:
    """Run `fn` on rank 0 alone (file writes); the other ranks wait for it, and fail too if it fails,
    instead of waiting at the next collective until the timeout."""
    result, error = None, None
    if par.main:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            error = e
    if par.distributed:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and not par.main:
            raise RuntimeError(f"rank 0 failed: {box[0]}")
    if error is not None:
        raise error
    return result


def gather(par: Parallel, obj: Any) -> list[Any]:
    """Every rank's `obj` (in-memory only: used for RNG states), on every rank."""
    if not par.distributed:
        return [obj]
    out: list[Any] = [None] * par.world_size
    dist.all_gather_object(out, obj)
    return out


def full_state(par: Parallel, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts (on CPU under FSDP, where every rank must call this)."""
    if par.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        model_sd = full_model_state(par, model)
        if not optimizer.state:
            # DCP would first "initialise" AdamW by a zero-gradient step, leaving its step count at 1
            # and so changing every later update; an untouched optimizer is saved as empty instead.
            return model_sd, {"state": {}, "param_groups": []}
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return model_sd, get_optimizer_state_dict(model, optimizer, options=opts)
    return model.state_dict(), optimizer.state_dict()


def full_model_state(par: Parallel, model: torch.nn.Module) -> dict:
    """Unsharded model weights (on CPU under FSDP; every rank must call it)."""
    if par.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict()


def load_state(par: Parallel, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict,
               optimizer_sd: dict, *, strict: bool = True) -> None:
    """Load full (unsharded) state dicts; an empty optimizer state resets the optimizer to untouched.

    strict=False: `model_sd` holds the trainable parameters only (frozen ones stay as loaded)."""
    if not optimizer_sd["state"]:
        optimizer.state.clear()
    if par.fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, strict=strict)
        set_model_state_dict(model, model_sd, options=opts)
        if optimizer_sd["state"]:
            set_optimizer_state_dict(model, optimizer, optimizer_sd, options=opts)
        return
    result = model.load_state_dict(model_sd, strict=strict)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if not strict and (result.unexpected_keys or trainable & set(result.missing_keys)):
        raise RuntimeError(f"checkpoint does not fit the model: unexpected {result.unexpected_keys[:5]}, "
                           f"missing trainable {sorted(trainable & set(result.missing_keys))[:5]}")
    if optimizer_sd["state"]:
        optimizer.load_state_dict(optimizer_sd)


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ returns a DTensor under FSDP2; make it a plain tensor."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def autocast_for(device: torch.device, dtype: str) -> ContextManager:
    """bf16 autocast on CUDA when dtype is auto; fp32 on CPU unless bfloat16 is asked for."""
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
