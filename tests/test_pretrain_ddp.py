"""Two processes under torchrun (gloo on CPU), DDP and FSDP2, give the loss curve of one process with the same global batch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from gristmill.manifests import read_manifest, verify
from gristmill.pretrain.run import run_pretrain
from faults import Faults
from pretrain_helpers import make_tokens, merged, rows, tiny

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(max_steps=12, optim={"warmup_steps": 3}, eval_every=6, checkpoint={"every": 4})


def torchrun(tok: Path, out: Path, faults: dict | None = None, **fields) -> subprocess.Popen:
    """tests/ddp_worker.py under torchrun: 2 processes, the tiny config with COMMON and `fields`, optional faults."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tok), str(out), json.dumps(merged(COMMON, fields)),
           json.dumps(faults or {})]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen) -> None:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]


def same_curve(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for s in a:
        for key in ("loss", "grad_norm", "val_loss"):
            if a[s].get(key) is None:
                assert b[s].get(key) is None, (s, key)
            else:
                assert a[s][key] == pytest.approx(b[s][key], rel=2e-5, abs=1e-6), (s, key)


def test_ddp_and_fsdp_match_one_process(tmp_path):
    tok = make_tokens(tmp_path / "tok")
    # DDP: 2 ranks x batch 2 x 2 accumulated micro-batches = 8 windows per step
    ddp = torchrun(tok, tmp_path / "ddp", batch_size=2, grad_accum=2)
    # FSDP2: 2 ranks x batch 4, with a NaN at step 6 so the rollback (sharded load) runs too
    fsdp = torchrun(tok, tmp_path / "fsdp", faults={"nan_at": 6}, batch_size=4, fsdp=True)
    one = run_pretrain(tiny(**COMMON, batch_size=8), {"data": [tok]}, tmp_path / "one")
    one_nan = run_pretrain(tiny(**COMMON, batch_size=8), {"data": [tok]}, tmp_path / "one_nan", hooks=Faults(nan_at=6))
    finish(ddp)
    finish(fsdp)

    same_curve(rows(tmp_path / "ddp"), rows(tmp_path / "one"))
    same_curve(rows(tmp_path / "fsdp"), rows(tmp_path / "one_nan"))
    for name, ref, mode in (("ddp", one, "ddp"), ("fsdp", one_nan, "fsdp")):
        m = read_manifest(tmp_path / name)
        assert verify(tmp_path / name) == []
        assert m.environment["world_size"] == 2 and m.metrics["parallel"] == mode
        assert m.metrics["tokens_seen"] == ref.metrics["tokens_seen"]
        assert [(e["step"], e["action"]) for e in m.events] == [(e["step"], e["action"]) for e in ref.events]
    assert [(e["step"], e["action"], e["to_step"]) for e in one_nan.events] == [(6, "rollback", 4)]
    # rank 0 wrote one model folder, gathered from the shards, that loads like any other
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model", local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == one.metrics["params"]
