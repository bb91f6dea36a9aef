"""The CLI: version, stage flags from the role table, errors without tracebacks."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from gristmill import __version__, cli
from gristmill.stages import StageSpec


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"gristmill {__version__}"


@dataclass(kw_only=True)
class OneConfig:
    size: int = 1


def test_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "BUILTIN", (StageSpec("one", "a stage", (), OneConfig, lambda *a, **k: None),))
    assert cli.main(["manifest", "verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gristmill: error: ") and "no manifest here" in err and "Traceback" not in err
    (tmp_path / "r.toml").write_text("[run]\nstages = ['one']\n[one]\nnot_a_key = 1\n")
    assert cli.main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--dry-run"]) == 1
    assert "not_a_key" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gristmill", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "manifest" in out.stdout and "align" in out.stdout
