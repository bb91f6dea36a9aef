"""The same recipe for datatrove's local, Slurm and Ray executors; datatrove's MinHash bucket stage as
the near-dedup backend at scale (checked against the in-memory backend); config checks."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from gristmill.config import ConfigError, build, to_dict
from gristmill.curate.config import CurateConfig, DedupConfig, SlurmConfig
from gristmill.curate.executors import QuietLocalExecutor, build_executors
from gristmill.curate.pipeline import (DedupKeysBlock, FinalizeStep, ReadBlock, SelectStep, SignatureExport,
                                       TaskWriter, build_jobs)
from gristmill.curate.readers import TaskUnit
from gristmill.curate.run import run_curate
from gristmill.demo import write_demo_data


def _plan(cfg: CurateConfig, tmp_path, n_tasks: int = 3) -> dict:
    return {"config": to_dict(cfg), "out_dir": str(tmp_path / "out"), "work_dir": str(tmp_path / "work"),
            "n_tasks": n_tasks, "models": {"langid": None, "reference": None, "quality": None},
            "manifest": {}, "truth": None}


UNITS = [TaskUnit("warc", (f"/data/crawl-{i}.warc.gz",)) for i in range(3)]


@pytest.mark.parametrize("backend", ["memory", "datatrove"])
def test_slurm_and_ray_executors_are_built_from_the_same_jobs(tmp_path, backend):
    from datatrove.executor import SlurmPipelineExecutor
    from datatrove.executor.ray import RayPipelineExecutor
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    for executor, cls in (("slurm", SlurmPipelineExecutor), ("ray", RayPipelineExecutor)):
        cfg = CurateConfig(executor=executor, slurm=SlurmConfig(partition="cpu"), dedup=DedupConfig(backend=backend))
        jobs = build_jobs(_plan(cfg, tmp_path), UNITS)
        execs = build_executors(cfg, jobs, tmp_path / "work")
        assert all(type(e) is cls for e in execs)
        names = [name for name, _, _ in jobs]
        if backend == "memory":
            assert names == ["tasks", "finalize"]
        else:
            assert names == ["tasks", "select", "signatures", "buckets", "finalize"]
            assert isinstance(jobs[1][1][0], SelectStep) and isinstance(jobs[2][1][0], SignatureExport)
            assert isinstance(jobs[3][1][0], MinhashDedupBuckets) and execs[3].world_size == cfg.dedup.bands
        first = execs[0]
        assert first.world_size == 3 and first.depends is None
        assert [type(b) for b in first.pipeline][0] is ReadBlock and type(first.pipeline[-1]) is TaskWriter
        assert any(isinstance(b, DedupKeysBlock) for b in first.pipeline)
        assert isinstance(execs[-1].pipeline[0], FinalizeStep) and execs[-1].world_size == 1
        for prev, ex in zip(execs, execs[1:]):
            assert ex.depends is prev  # each job waits for the one before it
        if executor == "slurm":
            assert first.partition == "cpu" and first.job_name == "gristmill-curate-tasks"


def test_local_executor_uses_workers(tmp_path):
    cfg = CurateConfig(workers=2)
    execs = build_executors(cfg, build_jobs(_plan(cfg, tmp_path), UNITS), tmp_path / "work")
    assert isinstance(execs[0], QuietLocalExecutor) and execs[0].workers == 2 and execs[-1].workers == 1


def test_datatrove_minhash_backend_matches_the_in_memory_one(tmp_path):
    dumps = []
    for seed in (1, 2):  # two files -> two tasks, duplicates across them too
        d = tmp_path / f"d{seed}"
        write_demo_data(d, pages=60, seed=seed)
        dumps.append(d / "web.warc.gz")
    mem = tmp_path / "mem"
    dt = tmp_path / "dt"
    m1 = run_curate(CurateConfig(), {"data": dumps}, mem)
    m2 = run_curate(CurateConfig(dedup=DedupConfig(backend="datatrove")), {"data": dumps}, dt)
    assert m1.metrics["dropped"].get("near_duplicate", 0) > 0
    assert m1.metrics["dropped"] == m2.metrics["dropped"] and m1.metrics["kept"] == m2.metrics["kept"]
    cols = ["id", "kept", "stage", "reason", "duplicate_of", "cluster", "similarity"]
    assert pq.read_table(mem / "ledger.parquet", columns=cols).equals(pq.read_table(dt / "ledger.parquet",
                                                                                      columns=cols))
    a = [json.loads(x)["id"] for x in gzip.open(mem / "documents-00000.jsonl.gz", "rt")]
    b = [json.loads(x)["id"] for x in gzip.open(dt / "documents-00000.jsonl.gz", "rt")]
    assert a == b


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="num_perm=100 must equal bands"):
        build(CurateConfig, {"dedup": {"num_perm": 100}}, section="curate")
    with pytest.raises(ConfigError, match="needs a partition"):
        build(CurateConfig, {"executor": "slurm"}, section="curate")
    with pytest.raises(ConfigError, match="langid.min_score=1.5"):
        build(CurateConfig, {"langid": {"min_score": 1.5}}, section="curate")
    with pytest.raises(ConfigError, match="unknown key"):
        build(CurateConfig, {"heuristics": {"gopher": {}}}, section="curate")
    cfg = build(CurateConfig, {"langid": {"languages": ["en", "de"]}, "dedup": {"bands": 16, "rows": 8,
                                                                                 "num_perm": 128}},
                section="curate")
    assert cfg.langid.languages == ["en", "de"] and to_dict(cfg)["dedup"]["num_perm"] == 128


def test_a_failed_slurm_job_stops_the_wait_with_its_id_and_logs(tmp_path):
    """run_curate's wait for the manifest on Slurm: a failed job stops it at once, naming the job and its log
    folder; jobs that all completed without a manifest stop it on the next look; wait_hours bounds it."""
    from gristmill.curate import CurateError
    from gristmill.curate.executors import slurm_job_states  # noqa: F401 - the real query; faked below
    from gristmill.curate.run import _wait_for_manifest

    cfg = CurateConfig(executor="slurm", slurm=SlurmConfig(partition="cpu", poll_seconds=0.01, wait_hours=0.0))
    jobs = [("101", "gristmill-curate-tasks", str(tmp_path / "logs/tasks/slurm_logs")),
            ("102", "gristmill-curate-finalize", str(tmp_path / "logs/finalize/slurm_logs"))]
    looks = []

    def failing(ids):  # the task array fails on the second look, the finalize job waits on it
        looks.append(ids)
        return {"101": "RUNNING" if len(looks) < 2 else "FAILED", "102": "PENDING"}
    with pytest.raises(CurateError, match=r"Slurm job 101 \(gristmill-curate-tasks\) ended FAILED; its logs are in "
                                          r".*logs/tasks/slurm_logs"):
        _wait_for_manifest(tmp_path, "abc", slurm=True, config=cfg, jobs=jobs, job_states=failing)
    assert len(looks) == 2

    with pytest.raises(CurateError, match="completed but"):
        _wait_for_manifest(tmp_path, "abc", slurm=True, config=cfg, jobs=jobs,
                           job_states=lambda ids: {"101": "COMPLETED", "102": "COMPLETED"})
    limited = CurateConfig(executor="slurm", slurm=SlurmConfig(partition="cpu", poll_seconds=0.01, wait_hours=1e-6))
    with pytest.raises(CurateError, match="wait_hours"):
        _wait_for_manifest(tmp_path, "abc", slurm=True, config=limited, jobs=jobs,
                           job_states=lambda ids: {"101": "RUNNING", "102": "PENDING"})


def test_sacct_array_states_fold_to_the_worst(monkeypatch):
    import shutil
    import subprocess

    from gristmill.curate import executors

    out = "101_0|COMPLETED\n101_1|FAILED\n101_2|COMPLETED\n102|PENDING\n103_0|CANCELLED by 42\n"
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/sacct" if name == "sacct" else None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out))
    assert executors.slurm_job_states(["101", "102", "103"]) == {"101": "FAILED", "102": "PENDING", "103": "CANCELLED"}
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert executors.slurm_job_states(["101"]) == {}
