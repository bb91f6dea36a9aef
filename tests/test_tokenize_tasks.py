"""Tokenize as tasks (tokenize.workers / tasks / executor): one process's tokens and counts; resume per task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gristmill.tokenize.config import TokenizeConfig
from gristmill.tokenize.run import TASK_DONE, TASKS_DIR, run_tokenize, task_files
from gristmill.tokenize.shards import SPLITS, ShardSet
from helpers import fake_curate_dir

WORDS = "mill grain flour river stone bridge 1842 sacks road café 日本語 🙂 prices rose 3.5%".split()
# Small shards so that every task closes several and its last one is short: boundaries differ from 1 worker.
CFG = dict(vocab_size=300, shard_tokens=700, batch_size=16, val_fraction=0.05)
COUNTS = ("train_tokens", "train_documents", "val_tokens", "val_documents", "text_bytes", "bytes_per_token",
          "vocab_size", "eos_id", "dtype")


def curate(tmp_path: Path, n: int = 240, shard_docs: int = 40) -> Path:
    rng = np.random.default_rng(0)
    docs = [{"text": f"doc {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 50))))} for i in range(n)]
    return fake_curate_dir(tmp_path / "c", docs, shard_docs=shard_docs)


def run(cur: Path, out: Path, **cfg):
    return run_tokenize(TokenizeConfig(**CFG, **cfg), {"data": [cur]}, out)


def documents(tok_dir: Path, split: str) -> list[list[int]]:
    """Every document of the split, in order, as token ids (eos included), read through the ShardSet reader."""
    ss = ShardSet.open(tok_dir, split)
    return [ss.document(i).tolist() for i in range(ss.num_documents)]


def assert_same_as_one_worker(one, many, one_dir: Path, many_dir: Path) -> None:
    for split in SPLITS:
        assert documents(many_dir, split) == documents(one_dir, split), split
    assert {k: many.metrics[k] for k in COUNTS} == {k: one.metrics[k] for k in COUNTS}
    assert many.metrics["tokenizer"]["sha256"] == one.metrics["tokenizer"]["sha256"]
    # Per-shard counts add up to the totals, and no shard is over shard_tokens unless it is one document.
    for split in SPLITS:
        shards = {k: v for k, v in many.metrics["shards"].items() if k.startswith(f"{split}-")}
        assert sum(v["tokens"] for v in shards.values()) == many.metrics[f"{split}_tokens"]
        assert all(v["tokens"] <= CFG["shard_tokens"] or v["documents"] == 1 for v in shards.values())
    assert not (many_dir / TASKS_DIR).exists()


def test_task_files_are_contiguous_and_cover_every_shard():
    files = [Path(f"d{i}") for i in range(7)]
    for n in range(1, 8):
        parts = task_files(files, n)
        assert len(parts) == n and all(parts) and sum(parts, []) == files


@pytest.mark.parametrize("workers,tasks", [(2, 0), (1, 3)])
def test_workers_give_the_tokens_and_counts_of_one_worker(tmp_path, workers, tasks):
    cur = curate(tmp_path)
    one = run(cur, tmp_path / "one")
    many = run(cur, tmp_path / "many", workers=workers, tasks=tasks)
    assert_same_as_one_worker(one, many, tmp_path / "one", tmp_path / "many")
    # The tasks did the encoding: a task's last shard is short, so the shard boundaries are not one worker's.
    assert many.metrics["shards"] != one.metrics["shards"]


def test_killed_task_resumes_and_finished_task_is_kept(tmp_path, monkeypatch):
    import gristmill.tokenize.run as run_mod

    cur = curate(tmp_path)
    one = run(cur, tmp_path / "one")
    clean = run(cur, tmp_path / "clean", tasks=2)

    def killed(*a, **k):
        raise KeyboardInterrupt("simulated kill before the merge")

    monkeypatch.setattr(run_mod, "_merge_tasks", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cur, tmp_path / "t", tasks=2)
    monkeypatch.undo()
    tasks = tmp_path / "t" / TASKS_DIR
    # Task 1 was "killed": no marker, and its last shard cut short; task 0 finished and keeps its marker.
    (tasks / "task-00001" / TASK_DONE).unlink()
    last = sorted((tasks / "task-00001").glob("train-*.bin"))[-1]
    last.write_bytes(last.read_bytes()[:10])
    marker0 = (tasks / "task-00000" / TASK_DONE).stat().st_mtime_ns
    json.loads((tasks / "task-00000" / TASK_DONE).read_text())  # a finished task's marker is whole JSON

    seen = {}
    real = run_mod._merge_tasks

    def spy(out, markers):
        seen["marker0"] = (tasks / "task-00000" / TASK_DONE).stat().st_mtime_ns
        return real(out, markers)

    monkeypatch.setattr(run_mod, "_merge_tasks", spy)
    m = run(cur, tmp_path / "t", tasks=2)
    assert seen["marker0"] == marker0  # task 0 was not run again
    assert {"kind": "resume", "detail": "1 of 2 encoding tasks already finished"} in m.events
    assert [(o.path, o.sha256) for o in m.outputs if o.kind != "report"] == \
        [(o.path, o.sha256) for o in clean.outputs if o.kind != "report"]
    assert_same_as_one_worker(one, m, tmp_path / "one", tmp_path / "t")


def test_ray_executor_gives_the_tokens_of_one_worker(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed in this environment; the Ray path is untested here")
    cur = curate(tmp_path, n=120)
    one = run(cur, tmp_path / "one")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        many = run(cur, tmp_path / "ray", executor="ray", workers=2)
    finally:
        ray.shutdown()
    assert_same_as_one_worker(one, many, tmp_path / "one", tmp_path / "ray")


@pytest.mark.parametrize("field,value", [("workers", 0), ("tasks", -1), ("cpus_per_task", -1)])
def test_config_checks_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"tokenize.{field}="):
        TokenizeConfig(**{field: value})
