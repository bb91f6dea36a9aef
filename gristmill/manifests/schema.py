"""The manifest schema `gristmill.manifest/1`: dataclasses, validation and the content id."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from gristmill.errors import GristmillError
from gristmill.manifests.io import canonical_json

SCHEMA = "gristmill.manifest/1"
MANIFEST_NAME = "manifest.json"


class ManifestError(GristmillError):
    """A manifest that is missing, malformed, unsafe, or does not match the files it lists."""


@dataclass
class InputRecord:
    """One input of a stage: a gristmill stage folder (stage + id set) or a raw file/folder."""

    role: str
    path: str  # relative to the manifest's folder when possible, else absolute
    sha256: str  # of the input's manifest.json for stage inputs; of the file / folder tree for raw ones
    stage: str | None = None
    id: str | None = None
    bytes: int | None = None


@dataclass
class OutputRecord:
    path: str  # relative, inside the manifest's folder
    kind: str
    bytes: int
    sha256: str
    records: int | None = None
    # True: the same config and inputs give these bytes again (compare two runs on this); False: holds wall
    # times or other run-dependent values (reports, timings.jsonl); None: not checked for this stage.
    deterministic: bool | None = None


@dataclass
class Manifest:
    stage: str
    id: str
    config: dict[str, Any]
    inputs: list[InputRecord] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    software: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    # Digest of the manifest's own content (set by write_manifest; empty in manifests older than it):
    # {"sha256": of every other field, "fields": {field: first 16 hex of its own sha256}}.
    digest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # Field order of the DESIGN.md example, so manifests read top to bottom the same way.
        order = ["schema", "stage", "id", "created", "software", "environment", "config",
                 "inputs", "outputs", "metrics", "events"]
        return {k: d[k] for k in order} | ({"digest": d["digest"]} if d["digest"] else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "manifest") -> "Manifest":
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("schema") != SCHEMA:
            raise ManifestError(f"{where}: schema is {d.get('schema')!r}, this gristmill reads {SCHEMA!r}")
        missing = [k for k in ("stage", "id", "config") if k not in d]
        if missing:
            raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            m = cls(**{**d, "inputs": [InputRecord(**i) for i in d.get("inputs", [])],
                       "outputs": [OutputRecord(**o) for o in d.get("outputs", [])]})
        except TypeError as e:
            raise ManifestError(f"{where}: malformed input or output record ({e})") from None
        for o in m.outputs:
            check_output_path(o.path, where=where)
        return m

    def output(self, path: str) -> OutputRecord:
        for o in self.outputs:
            if o.path == path:
                return o
        raise ManifestError(f"stage {self.stage} ({self.id}) lists no output {path!r}")

    def outputs_of(self, kind: str) -> list[OutputRecord]:
        return [o for o in self.outputs if o.kind == kind]


def content_digest(d: dict[str, Any]) -> dict[str, Any]:
    """The digest a manifest dict (to_dict) is written with: over every field but the digest itself."""
    body = {k: v for k, v in d.items() if k != "digest"}
    return {"sha256": hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest(),
            "fields": {k: hashlib.sha256(canonical_json(v).encode("utf-8")).hexdigest()[:16] for k, v in body.items()}}


def digest_problem(m: Manifest) -> str | None:
    """None when a manifest matches its recorded digest (or records none); else what changed."""
    rec = m.digest
    if not rec:
        return None
    now = content_digest(m.to_dict())
    if now["sha256"] == rec.get("sha256"):
        return None
    old = rec.get("fields", {})
    changed = sorted(k for k in set(old) | set(now["fields"]) if old.get(k) != now["fields"].get(k))
    return (f"edited after its stage wrote it: {', '.join(changed) or 'its content'} no longer match"
            f"{'es' if len(changed) == 1 else ''} the manifest's digest; run the stage again (--force) to "
            "rebuild it, or restore the original file")


def check_output_path(path: str, *, where: str = "manifest") -> None:
    """Outputs must be relative paths that stay inside the manifest's folder."""
    if not path or PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith(("/", "\\")):
        raise ManifestError(f"{where}: output path {path!r} is absolute; outputs must be relative to the manifest's folder")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise ManifestError(f"{where}: output path {path!r} leaves the manifest's folder ('..')")
    if os.path.normpath(path) in (".", ""):
        raise ManifestError(f"{where}: output path {path!r} names the folder itself")


def compute_id(stage: str, config: dict[str, Any], input_ids: list[str]) -> str:
    """First 16 hex of sha256(stage + canonical config + input ids), as DESIGN.md fixes it.

    Input ids are the upstream manifest ids for stage inputs and content hashes for raw inputs,
    so the id changes exactly when the config or any input's content changes.
    """
    payload = stage + "\n" + canonical_json(config) + "\n" + "\n".join(input_ids)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
