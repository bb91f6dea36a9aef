"""Two processes under torchrun (gloo on CPU) give the loss curve of one process with the same global batch: pretrain (DDP, FSDP2), SFT (DDP)."""
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
    return launch("pretrain", out, merged(COMMON, fields), faults, {"data": [str(tok)]})


def launch(stage: str, out: Path, config: dict, faults: dict | None, inputs: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), stage, str(out), json.dumps(config), json.dumps(faults or {}),
           json.dumps(inputs)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen) -> None:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]


def same_curve(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for s in a:
        for key in ("loss", "grad_norm", "eval_loss"):
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


def test_sft_under_ddp_matches_one_process(tmp_path):
    """Two ranks of 2 packed rows each = one process with 4 rows: the same loss and gradient norm per step,
    which holds only if the loss is normalised by the supervised tokens of the whole step on all ranks."""
    from align_helpers import sft_config, sft_records, tiny_base, write_jsonl
    from gristmill.align.sft import run_sft

    base = tiny_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(120))
    # no adapter dropout: its masks are drawn per rank and cannot match one process's
    cfg = dict(max_steps=6, eval_generate=0, samples=0, checkpoint={"every": 3}, lora={"dropout": 0.0})
    two = launch("sft", tmp_path / "two", cfg | {"batch_size": 2}, None, {"model": [str(base)], "data": [str(data)]})
    one = run_sft(sft_config(**cfg, batch_size=4), {"model": [base], "data": [data]}, tmp_path / "one")
    finish(two)
    a, b = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for s in a:
        for key in ("loss", "grad_norm", "eval_loss", "tokens"):
            if a[s].get(key) is None:
                assert b[s].get(key) is None, (s, key)
            else:
                assert a[s][key] == pytest.approx(b[s][key], rel=2e-5, abs=1e-6), (s, key)
    assert read_manifest(tmp_path / "two").metrics["world_size"] == 2 and one.metrics["world_size"] == 1


def test_dpo_under_ddp_matches_one_process(tmp_path):
    """Two ranks of 2 pairs each = one process with 4 pairs, the reference log-probs computed once by rank 0
    into the cache and read by both ranks."""
    from align_helpers import dpo_config, pair_records, tiny_base, write_jsonl
    from gristmill.align.dpo import run_dpo

    base = tiny_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_records(60))
    cfg = dict(max_steps=4, judge_prompts=0, checkpoint={"every": 2}, lora={"dropout": 0.0})
    one = run_dpo(dpo_config(**cfg, batch_size=4), {"model": [base], "data": [data]}, tmp_path / "one")
    two = launch("dpo", tmp_path / "two", cfg | {"batch_size": 2}, None, {"model": [str(base)], "data": [str(data)]})
    finish(two)
    a, b = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 5))
    for s in a:
        for key in ("loss", "grad_norm", "train_accuracy", "train_margin", "eval_loss", "pairs"):
            if a[s].get(key) is None:
                assert b[s].get(key) is None, (s, key)
            else:
                assert a[s][key] == pytest.approx(b[s][key], rel=2e-5, abs=1e-6), (s, key)
    m2 = read_manifest(tmp_path / "two")
    assert m2.metrics["world_size"] == 2 and m2.metrics["reference"]["hit"]  # the cache of the one-process run
    assert m2.metrics["reference"]["key"] == one.metrics["reference"]["key"]
