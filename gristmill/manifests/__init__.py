"""Manifests: the record each stage writes and the next one checks (schema gristmill.manifest/1)."""
from gristmill.manifests.hashing import sha256_bytes, sha256_file, sha256_tree
from gristmill.manifests.contract import RAW, StageStart, begin_stage, input_records
from gristmill.manifests.inputs import check_input
from gristmill.manifests.io import atomic_folder, atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, canonical_json
from gristmill.manifests.lineage import format_lineage, lineage
from gristmill.manifests.schema import (MANIFEST_NAME, SCHEMA, InputRecord, Manifest, ManifestError, OutputRecord,
                                        check_output_path, compute_id)
from gristmill.manifests.store import (environment_info, finished, resolve_input_path, new_manifest, output_record, read_manifest,
                                       software_info, verified, verify, write_manifest)

__all__ = [
    "MANIFEST_NAME", "RAW", "SCHEMA", "StageStart", "begin_stage", "input_records", "InputRecord", "Manifest", "ManifestError", "OutputRecord", "atomic_folder", "atomic_open",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "canonical_json", "check_input",
    "check_output_path", "compute_id", "environment_info", "finished", "format_lineage", "lineage", "new_manifest",
    "output_record", "read_manifest", "resolve_input_path", "sha256_bytes", "sha256_file", "sha256_tree",
    "software_info", "verified", "verify", "write_manifest",
]
