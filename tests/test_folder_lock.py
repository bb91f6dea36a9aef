"""Output-folder locks: a second process is refused with the folder and the holder's pid, the lock dies with its holder (kill -9 too), torchrun's other ranks and nested use pass."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gristmill.cli import main
from gristmill.config import to_dict
from gristmill.manifests import RAW, begin_stage, output_record, write_manifest
from gristmill.manifests.lock import LOCK_NAME, FolderBusy, folder_lock
from gristmill.runs import execute, plan
from gristmill.stages import Role, StageSpec

# A separate process that takes the lock, says so on stdout, and holds it until its stdin closes.
HOLDER = """
import sys
from gristmill.manifests.lock import folder_lock
with folder_lock(sys.argv[1], command="the test's holder"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """(folder, process) with the folder locked by another process; the process is ended afterwards."""
    folder = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_second_process_is_refused_then_succeeds_after_the_first_exits(holder):
    folder, proc = holder
    with pytest.raises(FolderBusy) as e:
        with folder_lock(folder, command="second"):
            pass
    msg = str(e.value)
    assert str(folder) in msg and f"pid {proc.pid}" in msg and "the test's holder" in msg and "\n" not in msg
    proc.stdin.close()  # the holder leaves its `with` and exits
    assert proc.wait(timeout=30) == 0
    with folder_lock(folder, command="second") as path:
        assert path.read_text() == f"pid {os.getpid()}: second\n"
    assert (folder / LOCK_NAME).read_text() == ""  # emptied on release: no stale pid to mislead anyone


def test_a_killed_holder_releases_the_lock(holder):
    folder, proc = holder
    os.kill(proc.pid, signal.SIGKILL)  # no `finally` runs: only the kernel can drop the lock
    proc.wait(timeout=30)
    with folder_lock(folder, command="after the kill") as path:
        assert path.read_text() == f"pid {os.getpid()}: after the kill\n"


def test_commands_refuse_a_locked_folder_in_one_line(holder, tmp_path, capsys):
    folder, proc = holder
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nstages = ["tokenize"]\n')
    for argv in (["tokenize", "--input", str(tmp_path / "nowhere"), "--out", str(folder)],  # the lock comes first
                 ["run", str(recipe), "--out", str(folder)],
                 ["demo", "--out", str(folder)]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("gristmill: error: ") and f"{folder} is in use" in err and f"pid {proc.pid}" in err
        assert "\n" not in err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing was written


def test_other_torchrun_ranks_and_nested_use_do_not_lock(holder, monkeypatch):
    folder, _ = holder
    monkeypatch.setenv("RANK", "1")  # rank 0 of the job holds the folder; the others share it
    with folder_lock(folder, command="rank 1") as path:
        assert path is None
    monkeypatch.setenv("RANK", "0")
    other = folder.parent / "other"
    with folder_lock(other, command="outer"), folder_lock(other, command="inner"):  # `gristmill demo` -> its run
        assert (other / LOCK_NAME).read_text() == f"pid {os.getpid()}: outer\n"
    with folder_lock(other, command="again"):  # the nested exit did not leave it marked as held
        pass


@dataclass(kw_only=True)
class EchoConfig:
    n: int = 1


SEEN: list[str] = []


def run_echo(config, inputs, out_dir, *, force=False):
    SEEN.append((Path(out_dir) / LOCK_NAME).read_text())  # who holds the stage folder while the stage runs
    start = begin_stage("echo", to_dict(config), inputs, out_dir, expect={"data": (RAW,)}, force=force)
    (out_dir / "e.txt").write_text("x")
    start.manifest.outputs = [output_record(out_dir, "e.txt", "text")]
    write_manifest(out_dir, start.manifest)
    return start.manifest


def test_a_run_holds_each_stage_folder_while_the_stage_runs(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    registry = {"echo": StageSpec("echo", "fake", (Role("data", "--input", accepts=(RAW,)),), EchoConfig, run_echo)}
    recipe = {"run": {"stages": ["echo"]}, "inputs": {"echo": {"data": str(tmp_path / "in.txt")}}}
    SEEN.clear()
    execute(plan(recipe, registry, run_dir=tmp_path / "run", recipe_dir=tmp_path), log=lambda s: None)
    assert SEEN == [f"pid {os.getpid()}: gristmill run, stage echo\n"]
    with folder_lock(tmp_path / "run" / "echo", command="after"):  # released when the stage finished
        pass
