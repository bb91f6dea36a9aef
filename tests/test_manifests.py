"""Manifests: round trip, verify, unsafe paths, lineage, the stage contract's skip test."""
from __future__ import annotations

import json
import os

import pytest

from gristmill.cli import main
from gristmill.manifests import (ManifestError, begin_stage, check_input, compute_id, finished,
                                 format_lineage, lineage, new_manifest, output_record, read_manifest, sha256_file,
                                 verify, write_manifest)


def _stage(folder, stage, inputs=(), text="hello", config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "out.txt").write_text(text)
    m = new_manifest(stage, config or {"k": 1}, list(inputs))
    m.outputs = [output_record(folder, "out.txt", "text", records=1)]
    m.metrics = {"kept": 3}
    write_manifest(folder, m)
    return m


def test_round_trip(tmp_path):
    m = _stage(tmp_path / "a", "curate")
    back = read_manifest(tmp_path / "a")
    assert back == m
    assert back.to_dict() == json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert list(back.to_dict())[:3] == ["schema", "stage", "id"]


def test_id_depends_on_stage_config_and_inputs():
    base = compute_id("curate", {"a": 1, "b": [1, 2]}, ["data=x"])
    assert base == compute_id("curate", {"b": [1, 2], "a": 1}, ["data=x"])  # key order is not content
    assert len(base) == 16
    assert base != compute_id("tokenize", {"a": 1, "b": [1, 2]}, ["data=x"])
    assert base != compute_id("curate", {"a": 2, "b": [1, 2]}, ["data=x"])
    assert base != compute_id("curate", {"a": 1, "b": [1, 2]}, ["data=y"])


def test_verify_catches_changed_byte_and_missing_file(tmp_path):
    _stage(tmp_path / "a", "curate")
    assert verify(tmp_path / "a") == []
    assert main(["manifest", "verify", str(tmp_path / "a")]) == 0
    good = sha256_file(tmp_path / "a" / "out.txt")
    (tmp_path / "a" / "out.txt").write_text("hellO")
    problems = verify(tmp_path / "a")
    assert len(problems) == 1 and "out.txt" in problems[0] and good in problems[0]
    assert sha256_file(tmp_path / "a" / "out.txt") in problems[0]
    assert main(["manifest", "verify", str(tmp_path / "a")]) == 1
    (tmp_path / "a" / "out.txt").unlink()
    assert "missing" in verify(tmp_path / "a")[0]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", ""])
def test_unsafe_output_paths_are_refused(tmp_path, bad):
    _stage(tmp_path / "a", "curate")
    mp = tmp_path / "a" / "manifest.json"
    d = json.loads(mp.read_text())
    d["outputs"][0]["path"] = bad
    mp.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="output path"):
        read_manifest(mp)
    with pytest.raises(ManifestError):
        write_manifest(tmp_path / "b", _with_output(bad))


def _with_output(path):
    m = new_manifest("curate", {}, [])
    from gristmill.manifests import OutputRecord
    m.outputs = [OutputRecord(path=path, kind="x", bytes=0, sha256="0" * 64)]
    return m


def test_symlink_out_of_folder_is_refused(tmp_path):
    _stage(tmp_path / "a", "curate")
    (tmp_path / "secret.txt").write_text("hello")
    os.remove(tmp_path / "a" / "out.txt")
    os.symlink(tmp_path / "secret.txt", tmp_path / "a" / "out.txt")
    assert "outside the folder" in verify(tmp_path / "a")[0]


def test_schema_and_json_errors_name_the_file(tmp_path):
    (tmp_path / "m").mkdir()
    mp = tmp_path / "m" / "manifest.json"
    mp.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON") as e:
        read_manifest(mp)
    assert str(mp) in str(e.value)
    mp.write_text(json.dumps({"schema": "other/9", "stage": "x", "id": "1", "config": {}}))
    with pytest.raises(ManifestError, match="schema"):
        read_manifest(mp)
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "nowhere")


def test_lineage_over_three_stages(tmp_path):
    raw = tmp_path / "dump.warc"
    raw.write_bytes(b"WARC/1.0\r\n")
    a = _stage(tmp_path / "run" / "curate", "curate", [check_input(raw, role="data", relative_to=tmp_path / "run" / "curate")])
    b = _stage(tmp_path / "run" / "tokenize", "tokenize",
               [check_input(tmp_path / "run" / "curate", "curate", relative_to=tmp_path / "run" / "tokenize")])
    c = _stage(tmp_path / "run" / "pretrain", "pretrain",
               [check_input(tmp_path / "run" / "tokenize", "tokenize", relative_to=tmp_path / "run" / "pretrain")])
    assert b.inputs[0].path == "../curate/manifest.json"  # relative, so a run folder can move
    node = lineage(tmp_path / "run" / "pretrain")
    chain = []
    while node.manifest is not None:
        chain.append((node.manifest.stage, node.manifest.id))
        node = node.parents[0]
    assert chain == [("pretrain", c.id), ("tokenize", b.id), ("curate", a.id)]
    assert node.path.resolve() == raw.resolve() and node.raw_sha256 == sha256_file(raw)
    text = format_lineage(lineage(tmp_path / "run" / "pretrain"))
    lines = text.splitlines()
    assert len(lines) == 4 and c.id in lines[0] and a.id in lines[2] and "kept=3" in lines[2] and "raw data" in lines[3]
    assert main(["manifest", "lineage", str(tmp_path / "run" / "pretrain")]) == 0


def test_check_input_refuses_wrong_stage_and_unverified(tmp_path):
    _stage(tmp_path / "a", "curate")
    with pytest.raises(ManifestError, match="expected tokenize"):
        check_input(tmp_path / "a", "tokenize")
    (tmp_path / "a" / "out.txt").write_text("changed")
    with pytest.raises(ManifestError, match="does not verify"):
        check_input(tmp_path / "a", "curate")
    (tmp_path / "raw").mkdir()
    with pytest.raises(ManifestError, match="no manifest.json"):
        check_input(tmp_path / "raw", "curate")
    with pytest.raises(ManifestError, match="does not exist"):
        check_input(tmp_path / "missing.warc")


def test_raw_folder_hash_tracks_content(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "w.bin").write_bytes(b"\x00\x01")
    r1 = check_input(d)
    (d / "w.bin").write_bytes(b"\x00\x02")
    r2 = check_input(d)
    assert r1.sha256 != r2.sha256 and r1.bytes == r2.bytes == 2 and r1.stage is None


def test_begin_stage_skips_finished_and_forgets_stale(tmp_path):
    raw = tmp_path / "in.txt"
    raw.write_text("x")
    out = tmp_path / "out"
    s = begin_stage("curate", {"k": 1}, {"data": [raw]}, out, expect={"data": ("raw",)})
    assert s.done is None
    (out / "out.txt").write_text("y")
    s.manifest.outputs = [output_record(out, "out.txt", "text")]
    write_manifest(out, s.manifest)
    again = begin_stage("curate", {"k": 1}, {"data": [raw]}, out, expect={"data": ("raw",)})
    assert again.done is not None and again.done.id == s.manifest.id
    assert begin_stage("curate", {"k": 1}, {"data": [raw]}, out, expect={"data": ("raw",)}, force=True).done is None
    write_manifest(out, s.manifest)
    changed = begin_stage("curate", {"k": 2}, {"data": [raw]}, out, expect={"data": ("raw",)})
    assert changed.done is None and not (out / "manifest.json").exists()
    assert finished(out, s.manifest.id) is None
    with pytest.raises(ManifestError, match="unknown input role"):
        begin_stage("curate", {}, {"model": [raw]}, out, expect={"data": ("raw",)})


def _count_hashing(monkeypatch):
    """Files read in full by any hash from now on."""
    from gristmill.manifests import hashing
    seen = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: seen.append(str(p)) or real(p))
    return seen


def test_stage_starts_trust_the_hash_cache_and_verify_does_not(tmp_path, monkeypatch):
    """A second stage start reads no unchanged input again (stage outputs and raw files); an edit that keeps
    size and mtime fools the cache but not `manifest verify`, nor a start under --verify-inputs."""
    up = tmp_path / "up"
    _stage(up, "curate", text="x" * 5000)
    raw = tmp_path / "raw.txt"
    raw.write_text("y" * 3000)
    expect = {"data": ("curate",), "extra": ("raw",)}
    inputs = {"data": [up], "extra": [raw]}
    first = begin_stage("tokenize", {}, inputs, tmp_path / "out", expect=expect)
    seen = _count_hashing(monkeypatch)
    again = begin_stage("tokenize", {}, inputs, tmp_path / "out", expect=expect)
    assert again.manifest.id == first.manifest.id
    assert not [p for p in seen if p.endswith(("out.txt", "raw.txt"))]  # only the small manifest.json files
    # the same bytes count, size and mtime, other content: the cache cannot see it
    st = os.stat(up / "out.txt")
    with open(up / "out.txt", "r+") as f:
        f.write("z")
    os.utime(up / "out.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify(up, cached=True) == []
    assert len(verify(up)) == 1  # `gristmill manifest verify` reads every byte
    monkeypatch.setenv("GRISTMILL_VERIFY_INPUTS", "1")
    with pytest.raises(ManifestError, match="does not verify"):
        begin_stage("tokenize", {}, inputs, tmp_path / "out", expect=expect)


def test_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    _stage(tmp_path / "a", "curate", text="hello")
    assert verify(tmp_path / "a", cached=True) == []
    (tmp_path / "a" / "out.txt").write_text("hello, again")  # size and mtime change
    seen = _count_hashing(monkeypatch)
    assert "sha256 mismatch" in verify(tmp_path / "a", cached=True)[0]
    assert any(p.endswith("out.txt") for p in seen)


def test_verify_inputs_flag_and_out_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRISTMILL_VERIFY_INPUTS", "0")  # restored (unset) after the test, whatever main() sets
    _stage(tmp_path / "a", "curate")
    (tmp_path / "f").write_text("not a folder")
    assert main(["tokenize", "--input", str(tmp_path / "a"), "--out", str(tmp_path / "f"), "--verify-inputs"]) == 1
    err = capsys.readouterr().err
    assert "that is a file" in err and "Traceback" not in err
    assert os.environ.get("GRISTMILL_VERIFY_INPUTS") == "1"


def test_an_edited_manifest_is_caught_by_verify_and_by_the_next_stage(tmp_path, capsys):
    up = tmp_path / "up"
    _stage(up, "curate")
    assert read_manifest(up).digest["sha256"] and verify(up) == []
    mp = up / "manifest.json"
    d = json.loads(mp.read_text())
    d["metrics"]["kept"] += 1  # a careless edit of a number
    mp.write_text(json.dumps(d, indent=2))
    problems = verify(up)
    assert len(problems) == 1 and "metrics no longer matches" in problems[0]
    assert main(["manifest", "verify", str(up)]) == 1
    assert "metrics no longer matches" in capsys.readouterr().err
    with pytest.raises(ManifestError, match="edited after its stage wrote it: metrics"):
        check_input(up, "curate")
    with pytest.raises(ManifestError, match="metrics"):
        begin_stage("tokenize", {}, {"data": [up]}, tmp_path / "out", expect={"data": ("curate",)})
    assert main(["manifest", "show", str(up)]) == 0  # still readable, to see what was changed
    d["metrics"]["kept"] -= 1
    d["config"]["k"] = 2  # another field: named
    mp.write_text(json.dumps(d))
    assert "config no longer match" in verify(up)[0]
    d.pop("digest")  # a manifest from before digests: accepted as it is
    mp.write_text(json.dumps(d))
    assert verify(up) == []


@pytest.mark.parametrize("cmd", [["run", "RECIPE"], ["demo"]])
def test_run_and_demo_with_out_naming_a_file_say_so_in_one_line(tmp_path, capsys, cmd):
    (tmp_path / "f").write_text("not a folder")
    (tmp_path / "r.toml").write_text('[run]\nstages = ["curate"]\n')
    argv = [str(tmp_path / "r.toml") if a == "RECIPE" else a for a in cmd] + ["--out", str(tmp_path / "f")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "that is a file" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
