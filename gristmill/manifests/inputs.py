"""Recording a stage's inputs: a finished stage folder (checked) or a raw file / folder (hashed)."""
from __future__ import annotations

import os
from pathlib import Path

from gristmill.manifests.hashing import HashCache, sha256_file, sha256_tree
from gristmill.manifests.schema import MANIFEST_NAME, InputRecord, ManifestError
from gristmill.manifests.store import read_manifest, verify


def _display_path(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return str(path)
    try:
        return os.path.relpath(path.resolve(), relative_to.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def report_path(path: str | Path, stage_dir: str | Path) -> str:
    """A path as a stage's report prints it: relative to the stage folder while it lies inside the run (the stage
    folder's parent: `../pretrain/model`), else absolute; always normalised (no `a/b/../c`, no `./`)."""
    target, here = Path(path).resolve(), Path(stage_dir).resolve()
    if target == here.parent or target.is_relative_to(here.parent):
        return os.path.relpath(target, here)
    return str(target)


def check_input(path: str | Path, expected_stage: str | tuple[str, ...] | None = None, *, role: str = "data",
                relative_to: str | Path | None = None, verify_outputs: bool = True,
                cache: HashCache | None = None) -> InputRecord:
    """Check one input and return its record for the new manifest.

    - A folder with `manifest.json` (or the manifest file itself) is a gristmill stage: its schema
      and stage are checked (`expected_stage`), and its outputs re-hashed unless `verify_outputs`
      is False. A mismatch raises ManifestError naming the file and both hashes.
    - Anything else is a raw input: recorded by path, size and sha256. `expected_stage` given and
      no manifest found is an error: the stage needs a gristmill stage folder there.

    `cache` given: hashes of unchanged files are trusted, a stage input's from its own folder's cache, a
    raw input's from `cache` (HashCache; the caller saves it). None: every byte is hashed.
    """
    p = Path(path)
    rel = Path(relative_to) if relative_to is not None else None
    if not p.exists():
        raise ManifestError(f"input {role!r}: {p} does not exist")
    mp = p / MANIFEST_NAME if p.is_dir() else p
    if mp.name == MANIFEST_NAME and mp.is_file():
        m = read_manifest(mp)
        stages = (expected_stage,) if isinstance(expected_stage, str) else expected_stage
        if stages and m.stage not in stages:
            raise ManifestError(f"input {role!r}: {mp} is a {m.stage!r} stage; expected {' or '.join(stages)}")
        if verify_outputs and (problems := verify(mp, cached=cache is not None)):
            raise ManifestError(f"input {role!r}: {mp.parent} does not verify: " + "; ".join(problems))
        return InputRecord(role=role, path=_display_path(mp, rel), sha256=sha256_file(mp), stage=m.stage, id=m.id)
    if expected_stage:
        want = expected_stage if isinstance(expected_stage, str) else " or ".join(expected_stage)
        raise ManifestError(f"input {role!r}: {p} has no {MANIFEST_NAME}; expected the output folder of a "
                            f"finished `{want}` stage")
    if p.is_dir():
        digest, size = sha256_tree(p, cache)
    else:
        digest, size = (cache.sha256(p) if cache else sha256_file(p)), p.stat().st_size
    return InputRecord(role=role, path=_display_path(p, rel), sha256=digest, bytes=size)

