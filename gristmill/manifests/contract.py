"""The stage contract in one place: check inputs, derive the id, recognise a finished stage."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from gristmill.manifests.hashing import HashCache
from gristmill.manifests.inputs import check_input
from gristmill.manifests.schema import MANIFEST_NAME, InputRecord, Manifest, ManifestError
from gristmill.manifests.store import environment_info, finished, new_manifest

RAW = "raw"  # in an `expect` tuple: this role also takes a raw file or folder (no manifest)


@dataclass
class StageStart:
    manifest: Manifest  # the new manifest: id, config and inputs set; outputs and metrics to fill
    done: Manifest | None  # the existing manifest when this exact stage already finished (skip)
    out_dir: Path


def input_records(inputs: Mapping[str, Sequence[str | Path]], expect: Mapping[str, tuple[str, ...]],
                  out_dir: str | Path) -> list[InputRecord]:
    """Check every input against what its role accepts; paths are recorded relative to out_dir.

    Hashes of files unchanged since they were last hashed are trusted (HashCache: the raw inputs' cache
    is out_dir's, written when out_dir exists; a stage input's is in its own folder); under
    --verify-inputs every byte is read."""
    unknown = sorted(set(inputs) - set(expect))
    if unknown:
        raise ManifestError(f"unknown input role(s) {', '.join(unknown)}; this stage takes {', '.join(expect)}")
    records = []
    cache = HashCache(out_dir)
    for role, paths in inputs.items():
        accepted = expect[role]
        stages = tuple(s for s in accepted if s != RAW)
        for p in paths:
            p = Path(p)
            has_manifest = (p / MANIFEST_NAME).is_file() or (p.name == MANIFEST_NAME and p.is_file())
            want = stages if (has_manifest or RAW not in accepted) else None
            records.append(check_input(p, want or None, role=role, relative_to=out_dir, cache=cache))
    cache.save()
    return records


def begin_stage(stage: str, config: dict[str, Any], inputs: Mapping[str, Sequence[str | Path]], out_dir: str | Path,
                *, expect: Mapping[str, tuple[str, ...]], force: bool = False, device: str = "cpu",
                world_size: int = 1) -> StageStart:
    """Step 1 and 4 of the contract. `config` is the resolved config (`gristmill.config.to_dict`).

    A folder whose manifest has another id (config or inputs changed) loses that manifest, so it
    counts as unfinished from here on and can never be mistaken for this run's result.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"--out {out}: that is a file; the output of `{stage}` is a folder: give a new or existing folder")
    out.mkdir(parents=True, exist_ok=True)  # first: the raw inputs' hash cache is kept here
    records = input_records(inputs, expect, out)
    m = new_manifest(stage, config, records, environment=environment_info(device, world_size))
    done = None if force else finished(out, m.id)
    if done is None and (out / MANIFEST_NAME).exists():
        (out / MANIFEST_NAME).unlink()
    return StageStart(manifest=m, done=done, out_dir=out)
