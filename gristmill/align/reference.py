"""Reference log-probs for the preference losses: computed once by the reference model and kept on disk under a key of all they depend on."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from gristmill.align import AlignError


def sequences_sha256(groups: list[list[Any]]) -> str:
    """sha256 over every group's encoded sequences (input ids and labels): it changes with the data, the
    chat template, max_length and the truncation rule, and with nothing else."""
    h = hashlib.sha256()
    for g in groups:
        for e in g:
            h.update(json.dumps([e.input_ids, e.labels], separators=(",", ":")).encode())
        h.update(b"|")
    return h.hexdigest()


def model_sha256(model_input: Path, model_dir: Path) -> str:
    """The reference model's identity: the hashes its producing stage recorded for model/ (a gristmill
    folder), else a hash of the folder's weight and config files (a plain Hugging Face folder)."""
    from gristmill.manifests import read_manifest, sha256_file

    h = hashlib.sha256()
    if (Path(model_input) / "manifest.json").is_file():
        m = read_manifest(model_input)
        rows = sorted((o.path, o.sha256) for o in m.outputs if o.path.startswith("model/"))
        if rows:
            h.update(json.dumps(rows).encode())
            return h.hexdigest()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
    if not files:
        raise AlignError(f"{model_dir}: no weight or config files to identify the reference model by")
    for p in files:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the parts as canonical JSON: the file name of one cache entry."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cached_logps(cache_dir: Path, parts: dict[str, Any],
                 compute: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], Path, bool]:
    """(tensors, the cache file, hit): read `<cache_dir>/<key>.safetensors`, or run `compute()` and write it
    (through a temporary name, so a crash never leaves half a file). The parts go into the file's metadata,
    and a file whose recorded parts differ from `parts` (a hash collision, or a hand-copied file) is refused."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    key = cache_key(parts)
    path = Path(cache_dir) / f"{key}.safetensors"
    want = json.dumps(parts, sort_keys=True)
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            got = (f.metadata() or {}).get("parts")
        if got != want:
            raise AlignError(f"{path}: its recorded key parts differ from this run's; delete the file to recompute")
        return load_file(str(path)), path, True
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in compute().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"parts": want})
    os.replace(tmp, path)
    return tensors, path, False
