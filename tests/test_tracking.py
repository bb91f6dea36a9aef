"""Experiment tracking: each backend writes what it should (read back from its files), offline, and says which
extra to install when its package is missing."""
from __future__ import annotations

import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.train.tracking import BACKENDS, Trackers, TrackingError, check_backends, numeric_fields

CONFIG = {"lr": 3e-4, "optim": {"beta1": 0.9}, "data": "runs/tokenize"}
ROWS = [{"step": 1, "loss": 2.5, "lr": 1e-4}, {"step": 2, "loss": 2.0, "lr": 2e-4},
        {"step": 3, "loss": 1.5, "lr": 3e-4, "val_loss": 1.75}]
NOISE = {"note": "warm", "spike": True, "grad_norm": None, "nan": math.nan, "inf": math.inf}  # never logged


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No wandb credentials or mode from the machine running the tests, and wandb's own caches in tmp."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_PROJECT",
                "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")


def run(names: list[str], out: Path, run_id: str = "0123456789abcdef") -> Trackers:
    t = Trackers(names, out_dir=out, stage="sft", run_id=run_id, config=CONFIG)
    for row in ROWS:
        t.log({**row, **NOISE})
    t.close()
    return t


def expected(key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in ROWS if key in r]


def test_numeric_fields_skips_what_cannot_be_plotted():
    assert numeric_fields({"step": 3, "loss": 1.5, "tokens": 4096, **NOISE}) == {"loss": 1.5, "tokens": 4096.0}


def test_unknown_backend_names_the_setting():
    with pytest.raises(TrackingError, match=r"^sft\.tracking: unknown tracking backend 'tensorbored'; "
                                            r"known: tensorboard, wandb, trackio$"):
        check_backends(["tensorbored"], key="sft.tracking")


@pytest.mark.parametrize("name", BACKENDS)
def test_missing_package_names_the_extra(name, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if not installed
    msg = f"sft.tracking asks for {name}, which is not installed: pip install 'gristmill[tracking]'"
    with pytest.raises(TrackingError) as e:
        check_backends([name], key="sft.tracking")
    assert str(e.value) == msg
    with pytest.raises(TrackingError, match="gristmill\\[tracking\\]"):
        Trackers([name], out_dir=tmp_path, stage="sft", run_id="x", config={})
    assert not any(tmp_path.iterdir())


def test_no_backend_writes_nothing_and_imports_nothing(tmp_path):
    t = run([], tmp_path)
    assert t.outputs() == [] and not any(tmp_path.iterdir())
    code = ("import sys, gristmill.train.tracking; "
            "print([m for m in ('tensorboard', 'wandb', 'trackio', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the packages load only when a backend is asked for


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = run(["tensorboard"], tmp_path)
    outs = t.outputs()
    assert outs and all(p.parts[0] == "tensorboard" and p.name.startswith("events.out.tfevents") for p in outs)
    ea = EventAccumulator(str(tmp_path / "tensorboard"))
    ea.Reload()
    assert sorted(ea.Tags()["scalars"]) == ["loss", "lr", "val_loss"]  # the noise fields are not there
    for key in ("loss", "lr", "val_loss"):
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in expected(key)]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected(key)], rel=1e-6)  # float32
    text = ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n")) == CONFIG


def wandb_records(path: Path):
    """The records of a .wandb transaction log: a 7-byte header (":W&B", magic, version), then LevelDB-log
    chunks (crc32, length, type; 32 KiB blocks) holding wandb_internal.Record protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_children() -> list[int]:
    """Live wandb-core processes started by this process (Linux)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"wandb-core" in cmd:
            pids.append(int(stat.parent.name))
    return pids


def test_wandb_offline_run_folder(tmp_path):
    pytest.importorskip("wandb")
    t = run(["wandb"], tmp_path)
    logs = sorted((tmp_path / "wandb").glob("offline-run-*-sft-0123456789abcdef/run-sft-0123456789abcdef.wandb"))
    assert len(logs) == 1
    assert logs[0].relative_to(tmp_path) in t.outputs()
    assert not any(p.is_symlink() for p in (tmp_path / "wandb").rglob("*"))  # links into ~/.cache copied in
    records = list(wandb_records(logs[0]))
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs[0].display_name == runs[0].run_id == "sft-0123456789abcdef" and runs[0].run_group == "sft"
    config = {u.key: json.loads(u.value_json) for u in runs[0].config.update if not u.key.startswith("_")}
    assert config == CONFIG
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    for key in ("loss", "lr", "val_loss"):
        assert [(h["step"], h[key]) for h in history if key in h] == expected(key)
    assert not set(NOISE) & {k for h in history for k in h}
    if Path("/proc/self/stat").exists():
        assert wandb_children() == []  # close() stopped wandb's service


def test_wandb_resumed_run_does_not_crash(tmp_path):
    pytest.importorskip("wandb")
    run(["wandb"], tmp_path)
    t = Trackers(["wandb"], out_dir=tmp_path, stage="sft", run_id="0123456789abcdef", config=CONFIG)
    t.log({"step": 2, "loss": 1.9})  # a resumed run replays from its checkpoint: the step goes back
    t.close()
    t.close()  # twice is fine
    logs = list((tmp_path / "wandb").glob("offline-run-*/run-sft-0123456789abcdef.wandb"))
    # offline runs of one id share a second-resolution folder name: one folder or two, never an error
    assert 1 <= len(logs) <= 2
    steps = [json.loads(i.value_json) for log in logs for r in wandb_records(log)
             if r.WhichOneof("record_type") == "history" for i in r.history.item if i.nested_key == ["step"]]
    assert steps.count(2) == 2


def test_trackio_local_store(tmp_path):
    pytest.importorskip("trackio")
    import trackio.utils

    home = trackio.utils.TRACKIO_DIR
    t = run(["trackio"], tmp_path)
    assert trackio.utils.TRACKIO_DIR == home  # the process-wide store is put back after the run
    assert Path("trackio/sft.db") in t.outputs()
    with sqlite3.connect(tmp_path / "trackio" / "sft.db") as db:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id",
                          ("sft-0123456789abcdef",)).fetchall()
        (config,) = db.execute("SELECT config FROM configs WHERE run_name = ?", ("sft-0123456789abcdef",)).fetchone()
    logged = [(step, json.loads(metrics)) for step, metrics in rows]
    for key in ("loss", "lr", "val_loss"):
        assert [(s, m[key]) for s, m in logged if key in m] == expected(key)
    assert not set(NOISE) & {k for _, m in logged for k in m}
    assert {k: v for k, v in json.loads(config).items() if not k.startswith("_")} == CONFIG


def test_all_three_in_one_run(tmp_path):
    for name in BACKENDS:
        pytest.importorskip(name)
    out = tmp_path / "sft"  # not made yet: each backend makes its own folder
    t = run(list(BACKENDS), out)
    assert {p.parts[0] for p in t.outputs()} == set(BACKENDS)
    assert all((out / p).is_file() for p in t.outputs())
    assert sorted(p.name for p in out.iterdir()) == sorted(BACKENDS)  # nothing else in the stage folder


def test_wandb_goes_online_only_when_the_user_set_it_up(tmp_path, monkeypatch):
    from gristmill.train.tracking import _wandb_user_configured

    assert not _wandb_user_configured()  # the fixture's machine: no key, no mode, no .netrc
    rc = tmp_path / "netrc"
    rc.write_text("machine example.org login me password secret\n")
    monkeypatch.setenv("NETRC", str(rc))
    assert not _wandb_user_configured()  # credentials for another host do not count
    rc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")  # what `wandb login` writes
    assert _wandb_user_configured()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert _wandb_user_configured()


def test_a_stage_sends_its_rows_to_the_trackers_and_lists_their_files_as_non_deterministic(tmp_path):
    """pretrain with tracking = ["tensorboard"]: every metrics.jsonl loss reaches the event files, which the
    manifest lists as outputs that differ run to run; a missing package is a config error naming the extra."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gristmill.config import ConfigError, build
    from gristmill.manifests import read_manifest, verify
    from gristmill.pretrain.config import PretrainConfig
    from gristmill.pretrain.run import run_pretrain
    from pretrain_helpers import make_tokens, merged, rows, tiny

    tok = make_tokens(tmp_path / "tok")
    out = tmp_path / "pre"
    run_pretrain(tiny(max_steps=6, tracking=["tensorboard"]), {"data": [tok]}, out)
    m = read_manifest(out)
    tracked = [o for o in m.outputs if o.kind == "tracking"]
    assert tracked and all(not o.deterministic and o.path.startswith("tensorboard/") for o in tracked)
    assert verify(out) == []
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    logged = {e.step: e.value for e in ea.Scalars("loss")}
    assert logged == pytest.approx({s: r["loss"] for s, r in rows(out).items()}, rel=1e-6)
    with pytest.raises(ConfigError, match=r"pretrain\.tracking\[0\]: 'mlflow' is not one of"):
        build(PretrainConfig, merged({"max_steps": 2}, {"tracking": ["mlflow"]}), section="pretrain")
