"""Shared test fixtures: fake stage folders built in tmp_path (a curate output, a tokenize output)."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any


def fake_curate_dir(path: Path, docs: list[dict[str, Any]], shard_docs: int | None = None) -> Path:
    """A finished curate folder at `path` holding `docs` in `documents-00000.jsonl.gz`.

    Each doc needs "text"; "id" defaults to "doc-<i>", "url" to None, "metadata" to {}.
    The manifest is a valid curate manifest (no inputs) listing the shard with kind "documents".
    `shard_docs` splits the documents over several shards of that many documents each.
    """
    from gristmill.manifests import new_manifest, output_record, write_manifest

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"id": str(d.get("id", f"doc-{i}")), "text": d["text"], "url": d.get("url"),
             "metadata": d.get("metadata", {})} for i, d in enumerate(docs)]
    step = shard_docs or max(len(rows), 1)
    # The content digest goes into the config so that different documents give a different curate id.
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    m = new_manifest("curate", {"fake": True, "n_docs": len(rows), "content": digest}, [])
    for k, a in enumerate(range(0, max(len(rows), 1), step)):
        name = f"documents-{k:05d}.jsonl.gz"
        chunk = rows[a:a + step]
        # mtime=0 keeps the gzip bytes (and so the manifest's sha256) deterministic.
        with open(path / name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            for r in chunk:
                f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        m.outputs.append(output_record(path, name, "documents", records=len(chunk)))
    m.metrics = {"records_read": len(rows), "kept": len(rows), "dropped": {}}
    write_manifest(path, m)
    return path


def tokenized_dir(path: Path, texts: list[str], vocab_size: int = 512, **config_overrides: Any) -> Path:
    """A finished tokenize folder at `path` (a BPE of `vocab_size` trained on `texts`).

    The curate folder goes beside it (`<path>-curate`); `config_overrides` are TokenizeConfig fields.
    `texts` needs at least 2 entries (doc ids "doc-<i>"); at least one lands in the val split
    (val_fraction=0.005 by default, so usually exactly one: pass val_fraction=0.1 for more).
    Read it back with `gristmill.tokenize.shards.ShardSet.open(path, "train")`.
    """
    from gristmill.tokenize.config import TokenizeConfig
    from gristmill.tokenize.run import run_tokenize

    path = Path(path)
    curate = fake_curate_dir(path.parent / f"{path.name}-curate", [{"text": t} for t in texts])
    cfg = TokenizeConfig(vocab_size=vocab_size, **config_overrides)
    run_tokenize(cfg, {"data": [curate]}, path)
    return path
