"""Write, read and verify stage folders: `DIR/manifest.json` plus the outputs it lists."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from gristmill.manifests.hashing import HashCache, sha256_file
from gristmill.manifests.io import atomic_write_json
from gristmill.manifests.schema import (MANIFEST_NAME, InputRecord, Manifest, ManifestError, OutputRecord, compute_id,
                                       content_digest, digest_problem)

# Versions recorded in every manifest; looked up from package metadata, never imported (cheap).
_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "datatrove", "trafilatura", "datasketch",
             "numpy", "fasttext-numpy2-wheel")


def software_info() -> dict[str, str]:
    from gristmill import __version__

    info = {"gristmill": __version__, "git_commit": _git_commit(), "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return info


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info(device: str = "cpu", world_size: int = 1) -> dict[str, Any]:
    return {"device": device, "world_size": world_size, "host": socket.gethostname()}


def input_ids(inputs: list[InputRecord]) -> list[str]:
    # Sorted by role (stable within a role) so a recipe and a CLI call that list roles in another
    # order still derive the same id.
    return [f"{i.role}={i.id or i.sha256}" for i in sorted(inputs, key=lambda i: i.role)]


def new_manifest(stage: str, config: dict[str, Any], inputs: list[InputRecord], **fields: Any) -> Manifest:
    """A manifest whose id is derived from stage, resolved config and input identities."""
    return Manifest(stage=stage, id=compute_id(stage, config, input_ids(inputs)), config=config,
                    inputs=list(inputs), software=software_info(), **fields)


def output_record(out_dir: str | Path, path: str | Path, kind: str, records: int | None = None,
                  deterministic: bool | None = None) -> OutputRecord:
    """Hash a file inside `out_dir` and describe it for the manifest (`deterministic`: see OutputRecord)."""
    out_dir = Path(out_dir)
    p = Path(path)
    full = p if p.is_absolute() else out_dir / p
    rel = full.resolve().relative_to(out_dir.resolve()).as_posix()
    return OutputRecord(path=rel, kind=kind, bytes=full.stat().st_size, sha256=sha256_file(full), records=records,
                        deterministic=deterministic)


def write_manifest(out_dir: str | Path, manifest: Manifest) -> Path:
    """Write `out_dir/manifest.json` atomically. Call it last: its presence means the stage finished."""
    out_dir = Path(out_dir)
    if not manifest.created:
        manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Manifest.from_dict(manifest.to_dict(), where=str(out_dir / MANIFEST_NAME))  # refuse unsafe paths early
    cache = HashCache(out_dir)
    for o in manifest.outputs:
        full = _check_inside(out_dir, o.path)
        if full.is_file():  # the stage has just hashed it: the next start need not read it again
            cache.remember(full, o.sha256)
    cache.save()
    path = out_dir / MANIFEST_NAME
    manifest.digest = content_digest(manifest.to_dict())  # over every field but the digest itself
    atomic_write_json(path, manifest.to_dict())
    return path


def resolve_input_path(manifest_dir: Path, record: InputRecord) -> Path:
    """Where an input record points, read from the folder of the manifest that lists it."""
    p = Path(record.path)
    return p if p.is_absolute() else Path(os.path.normpath(manifest_dir / p))


def manifest_path(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() or not p.name.endswith(".json") else p


def read_manifest(path: str | Path, *, check_digest: bool = True) -> Manifest:
    """Read a stage folder's manifest (or a manifest file), checking schema, output paths and (unless
    `check_digest` is False: `gristmill manifest show`) that its content still matches its digest."""
    mp = manifest_path(path)
    if not mp.is_file():
        raise ManifestError(f"{mp}: no manifest here; is {mp.parent} a finished gristmill stage folder?")
    try:
        data = json.loads(mp.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{mp}: not valid JSON ({e})") from None
    m = Manifest.from_dict(data, where=str(mp))
    if check_digest and (problem := digest_problem(m)):
        raise ManifestError(f"{mp}: {problem}")
    return m


def _check_inside(out_dir: Path, rel: str) -> Path:
    full = out_dir / rel
    # resolve() follows symlinks: a link that points out of the folder is refused like '..'.
    real, root = os.path.realpath(full), os.path.realpath(out_dir)
    if os.path.commonpath([real, root]) != root:
        raise ManifestError(f"{out_dir / MANIFEST_NAME}: output {rel!r} resolves outside the folder (to {real})")
    return full


def verify(path: str | Path, *, cached: bool = False) -> list[str]:
    """Re-hash every output a manifest lists. Returns the problems (empty when all is well).

    cached: trust the folder's hash cache for files whose stat is unchanged (stage starts, the planner);
    without it (`gristmill manifest verify`) every byte is read, and the cache is refreshed."""
    mp = manifest_path(path)
    m = read_manifest(mp, check_digest=False)
    out_dir = mp.parent
    cache = HashCache(out_dir, trust=cached)
    problems = []
    if problem := digest_problem(m):
        problems.append(f"{mp}: {problem}")
    for o in m.outputs:
        try:
            full = _check_inside(out_dir, o.path)
        except ManifestError as e:
            problems.append(str(e))
            continue
        if not full.is_file():
            problems.append(f"{full}: missing (manifest lists {o.bytes} bytes, sha256 {o.sha256})")
            continue
        got = cache.sha256(full)
        if got != o.sha256:
            problems.append(f"{full}: sha256 mismatch: manifest says {o.sha256}, file has {got}")
    cache.save()
    return problems


def verified(path: str | Path) -> Manifest:
    """Read a manifest and raise if any output it lists is missing or changed."""
    problems = verify(path)
    if problems:
        raise ManifestError("; ".join(problems) + f" (run `gristmill manifest verify {Path(path)}` for details)")
    return read_manifest(path)


def finished(out_dir: str | Path, expected_id: str) -> Manifest | None:
    """The stage contract's skip test: a manifest with this id whose outputs verify, else None."""
    mp = Path(out_dir) / MANIFEST_NAME
    if not mp.is_file():
        return None
    try:
        m = read_manifest(mp)
    except ManifestError:
        return None
    if m.id != expected_id or verify(mp, cached=True) or not _stage_inputs_unchanged(m, mp.parent):
        return None
    return m


def _stage_inputs_unchanged(m: Manifest, folder: Path) -> bool:
    """Each upstream stage's manifest is still the one this stage read. An upstream stage that ran
    again keeps its id (same config and inputs) but writes a new manifest, and possibly other
    bytes (a multi-threaded trainer is not bit-reproducible): what was built on the old one is stale."""
    for rec in m.inputs:
        if rec.stage is None:  # raw inputs: their sha256 is part of the id already
            continue
        p = resolve_input_path(folder, rec)
        upstream = p if p.name == MANIFEST_NAME else p / MANIFEST_NAME
        if not upstream.is_file() or sha256_file(upstream) != rec.sha256:
            return False
    return True
