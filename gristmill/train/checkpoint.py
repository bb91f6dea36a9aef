"""Checkpoints: atomic folders of named parts, each file's sha256 recorded and verified on load (no pickles).

    checkpoints/step-00000200/
      model.safetensors      the weights: all of them, or only the trainable ones under LoRA (a tensor shared
                             by two names, e.g. a tied embedding, stored once); a stage that trains several
                             models (PPO: policy and value) has one file per model, named by it
      optimizer.safetensors  optimizer tensors, keyed "<param id>/<name>" (exp_avg, exp_avg_sq, step)
      rng.safetensors        torch CPU / CUDA generator states, keyed "rank<r>/torch", "rank<r>/cuda<i>"
      state.json             loop state (step, data cursor, spike detector, events), optimizer param groups,
                             Python and NumPy RNG states, which names alias which tensor, the sha256 of
                             every file above, and its own sha256 (of the rest of it)

The folder is built under a hidden temporary name and renamed into place, so a checkpoint is either
complete or absent; a temporary folder left by a killed save is removed at the next start (`clean_partial`).
A file whose hash differs, or that does not decode, stops the load with one line naming it and what to do.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gristmill.manifests.hashing import sha256_bytes, sha256_file
from gristmill.manifests.io import atomic_folder
from gristmill.train import TrainError

PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


@dataclass
class Checkpoint:
    path: Path
    step: int
    parts: dict[str, dict[str, torch.Tensor]]  # weights by part name ("model"; ppo: "policy", "value")
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    state: dict[str, Any]  # the loop's JSON state
    rng: list[dict[str, Any]]  # one capture_rng() per rank


# --- RNG ---------------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"][:torch.cuda.device_count()])


def _rng_to_files(rngs: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for r, rng in enumerate(rngs):
        version, internal, gauss = rng["python"]
        name, keys, pos, has_gauss, cached = rng["numpy"]
        meta.append({"python": [version, list(internal), gauss],
                     "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
                     "cuda_devices": len(rng["cuda"])})
        tensors[f"rank{r}/torch"] = rng["torch"].contiguous()
        for i, t in enumerate(rng["cuda"]):
            tensors[f"rank{r}/cuda{i}"] = t.contiguous()
    return tensors, meta


def _rng_from_files(tensors: dict[str, torch.Tensor], meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r, m in enumerate(meta):
        version, internal, gauss = m["python"]
        name, keys, pos, has_gauss, cached = m["numpy"]
        out.append({"python": (version, tuple(internal), gauss),
                    "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
                    "torch": tensors[f"rank{r}/torch"],
                    "cuda": [tensors[f"rank{r}/cuda{i}"] for i in range(m["cuda_devices"])]})
    return out


# --- tensors with aliases (tied weights) and optimizer state ---------------------------------------

def _dedupe(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Safetensors refuses two names for one storage: keep the first name, record the others as aliases."""
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tensors, aliases = {}, {}
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in first and t.numel() > 0:
            aliases[name] = first[key]
        else:
            first[key] = name
            tensors[name] = t.detach().contiguous()
    return tensors, aliases


def _optimizer_to_files(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    keys = list(sd["state"])
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}/{k}"] = v.detach().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = {"param_groups": sd["param_groups"], "int_keys": all(isinstance(k, int) for k in keys),
            "scalars": scalars}
    return tensors, meta


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    conv = int if meta["int_keys"] else str
    state: dict[Any, dict[str, Any]] = {}
    for name, t in tensors.items():
        pid, _, k = name.rpartition("/")
        state.setdefault(conv(pid), {})[k] = t
    for pid, extra in meta["scalars"].items():
        state.setdefault(conv(pid), {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --- save / list / load ----------------------------------------------------------------------------

STATE = "state.json"


def _self_hash(doc: dict[str, Any]) -> str:
    """sha256 of state.json's content other than this hash (canonical JSON), so a change to any value shows."""
    rest = {k: v for k, v in doc.items() if k != "state_sha256"}
    return sha256_bytes(json.dumps(rest, sort_keys=True, allow_nan=False).encode())


def save_checkpoint(root: Path, step: int, *, parts: dict[str, dict[str, torch.Tensor]], optimizer: dict[str, Any],
                    state: dict[str, Any], rng: list[dict[str, Any]], keep: int) -> Path:
    """Write checkpoints/step-<step>/ atomically and delete all but the newest `keep`."""
    root = Path(root)
    final = root / checkpoint_name(step)
    with atomic_folder(final) as tmp:  # the same step saved again (after a rollback) replaces the old one
        aliases = {}
        for name, sd in parts.items():
            tensors, aliases[name] = _dedupe(sd)  # before .cpu(): a copy per name would hide the sharing
            save_file({k: v.cpu() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
        opt_t, opt_meta = _optimizer_to_files(optimizer)
        save_file({k: v.cpu() for k, v in opt_t.items()}, tmp / "optimizer.safetensors")
        rng_t, rng_meta = _rng_to_files(rng)
        save_file(rng_t, tmp / "rng.safetensors")
        files = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        doc = {"step": step, **state, "parts": list(parts), "aliases": aliases, "optimizer": opt_meta,
               "rng": rng_meta, "files": files}
        doc["state_sha256"] = _self_hash(doc)
        (tmp / STATE).write_text(json.dumps(doc, allow_nan=False) + "\n", encoding="utf-8")
    for _, old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_partial(root: Path) -> list[str]:
    """Remove the hidden folders a killed save leaves (`.step-*.tmp`, `.step-*.old`); their names, for the log."""
    root = Path(root)
    gone = sorted(p.name for p in root.glob(f".{PREFIX}*") if p.is_dir()) if root.is_dir() else []
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with state.json) as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file():
            try:
                out.append((int(p.name[len(PREFIX):]), p))
            except ValueError:
                continue
    return sorted(out)


def run_checkpoints(root: Path, run_id: str) -> list[Path]:
    """This run's complete checkpoints, oldest first (a folder can hold another run's: config or inputs changed)."""
    return [p for _, p in list_checkpoints(root) if read_state(p).get("run_id") == run_id]


def discard_other_runs(out_dir: Path, run_id: str, *, force: bool = False) -> None:
    """Delete out_dir/checkpoints of other runs (config or inputs changed), or all of them with `force`;
    with no checkpoint left, the metrics log of the abandoned run goes too."""
    root = Path(out_dir) / "checkpoints"
    keep = set() if force else set(run_checkpoints(root, run_id))
    for _, p in list_checkpoints(root):
        if p not in keep:
            shutil.rmtree(p)
    if not list_checkpoints(root):
        (Path(out_dir) / "metrics.jsonl").unlink(missing_ok=True)
        (Path(out_dir) / "timings.jsonl").unlink(missing_ok=True)


def _damaged(path: Path, problem: str) -> TrainError:
    return TrainError(f"checkpoint file {path}: {problem}; the checkpoint is damaged: delete {path.parent} to "
                      "resume from the one before it (or run with --force to start over)")


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json, its own hash checked (cheap: also to see which run it belongs to)."""
    f = Path(path) / STATE
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(f, f"does not decode ({e})") from None
    if not isinstance(doc, dict) or "state_sha256" not in doc:
        raise _damaged(f, "has no state_sha256 (not a checkpoint this version wrote)")
    if (got := _self_hash(doc)) != doc["state_sha256"]:
        raise _damaged(f, f"sha256 of its content {got} does not match the {doc['state_sha256']} it records")
    return doc


def _load_verified(f: Path, expected: str | None) -> dict[str, torch.Tensor]:
    if expected is None:
        raise _damaged(f, "is not listed in state.json")
    if not f.is_file():
        raise _damaged(f, "is missing")
    if (got := sha256_file(f)) != expected:
        raise _damaged(f, f"sha256 {got} does not match the {expected} recorded in state.json")
    try:
        return load_file(f)
    except Exception as e:  # the hash matched, so the writer wrote something unreadable: say so, name the file
        raise _damaged(f, f"does not decode ({type(e).__name__}: {e})") from None


def load_checkpoint(path: Path) -> Checkpoint:
    """Every part of a checkpoint, each file checked against the sha256 state.json records before it is read."""
    path = Path(path)
    doc = read_state(path)
    files = doc.pop("files")

    def read(name: str) -> dict[str, torch.Tensor]:
        return _load_verified(path / name, files.get(name))

    parts = {}
    for name in doc.pop("parts"):
        parts[name] = read(f"{name}.safetensors")
        for alias, target in doc["aliases"][name].items():
            parts[name][alias] = parts[name][target]
    doc.pop("aliases")
    optimizer = _optimizer_from_files(read("optimizer.safetensors"), doc.pop("optimizer"))
    rng = _rng_from_files(read("rng.safetensors"), doc.pop("rng"))
    doc.pop("state_sha256")
    return Checkpoint(path=path, step=int(doc["step"]), parts=parts, optimizer=optimizer, state=doc, rng=rng)
