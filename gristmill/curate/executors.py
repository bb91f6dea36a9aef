"""The same curation jobs on datatrove's local, Slurm or Ray executor (`curate.executor`).

Each job of `pipeline.build_jobs` becomes one executor whose `depends` is the job before it, all
sharing one logging folder per job under the work folder (datatrove's completions there make a
rerun skip finished tasks). Locally the jobs simply run in order in this process (tasks in a
process pool when workers > 1); on Slurm / Ray the last executor's `run()` submits the chain.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from datatrove.executor import LocalPipelineExecutor

from gristmill.curate.config import CurateConfig

_STDERR_LEVEL = "WARNING"  # datatrove logs every task's pipeline and stats at INFO; the files keep them


def _quiet_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    from datatrove.utils.logging import logger

    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(sys.stderr, level=_STDERR_LEVEL, format="{time:HH:mm:ss} | {level} | {message}")
    logger.add(logfile, level="DEBUG")
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def _progress_or_warning(record) -> bool:
    # datatrove's "N/M tasks completed." lines are the progress of a multi-worker run: let them through
    return record["level"].no >= 30 or "tasks completed" in record["message"]


def _quiet_default_logger() -> None:
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="INFO", filter=_progress_or_warning, format="{time:HH:mm:ss} | {message}")


def _quiet_close_task_logger(logfile) -> None:
    from datatrove.utils.logging import logger

    logger.complete()
    _quiet_default_logger()
    logfile.close()


def _patch_datatrove_logging() -> tuple:
    import datatrove.executor.base as base

    old = (base.add_task_logger, base.close_task_logger)
    base.add_task_logger, base.close_task_logger = _quiet_task_logger, _quiet_close_task_logger
    return old


@contextmanager
def quiet_datatrove() -> Iterator[None]:
    """datatrove's loggers at WARNING on stderr (the full logs still go to the task log files)."""
    import datatrove.executor.base as base
    from datatrove.utils.logging import setup_default_logger

    old = _patch_datatrove_logging()
    _quiet_default_logger()
    try:
        yield
    finally:
        base.add_task_logger, base.close_task_logger = old
        setup_default_logger()


class QuietLocalExecutor(LocalPipelineExecutor):
    """LocalPipelineExecutor whose tasks (also in pool processes) log to stderr at WARNING only."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        _patch_datatrove_logging()  # in a pool process too
        return super()._run_for_rank(rank, local_rank, node_rank)

    def run(self):
        """workers == 1: the tasks in order in this process, without datatrove's Manager process
        (which would outlive this one if it were killed). More workers: datatrove's process pool."""
        if self.workers != 1:
            return super().run()
        from copy import deepcopy

        from datatrove.utils.stats import PipelineStats

        self._launched = True
        ranks = self.get_incomplete_ranks(range(self.local_rank_offset, self.local_rank_offset + self.local_tasks))
        if not ranks:
            return PipelineStats()
        self.save_executor_as_json()
        pipeline, stats = self.pipeline, []
        for rank in ranks:
            self.pipeline = deepcopy(pipeline)
            stats.append(self._run_for_rank(rank))
        self.pipeline = pipeline
        total = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as f:
            total.save_to_disk(f)
        return total


def make_executor(cfg: CurateConfig, name: str, pipeline: list, tasks: int, logging_dir: str | Path,
                  depends=None):
    """One datatrove executor for one job."""
    logging_dir = str(logging_dir)
    if cfg.executor == "local":
        return QuietLocalExecutor(pipeline, tasks=tasks, workers=max(1, min(cfg.workers, tasks)),
                                  logging_dir=logging_dir, skip_completed=True)
    if cfg.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cfg.slurm
        return SlurmPipelineExecutor(pipeline, tasks=tasks, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
                                     job_name=f"gristmill-curate-{name}", logging_dir=logging_dir,
                                     env_command=s.env_command, depends=depends, skip_completed=True)
    if cfg.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        r = cfg.ray
        return RayPipelineExecutor(pipeline, tasks=tasks, workers=cfg.workers if cfg.workers > 1 else -1,
                                   logging_dir=logging_dir, depends=depends, cpus_per_task=r.cpus_per_task,
                                   mem_per_cpu_gb=r.mem_per_cpu_gb, skip_completed=True)
    raise ValueError(f"curate.executor={cfg.executor!r}: use local, slurm or ray")


def build_executors(cfg: CurateConfig, jobs: list[tuple[str, list, int]], work_dir: str | Path) -> list:
    """Executors for the jobs, in order, each depending on the previous one (Slurm / Ray)."""
    execs = []
    prev = None
    for name, pipeline, tasks in jobs:
        ex = make_executor(cfg, name, pipeline, tasks, Path(work_dir) / "logs" / name,
                           depends=None if cfg.executor == "local" else prev)
        execs.append(ex)
        prev = ex
    return execs


def run_executors(cfg: CurateConfig, executors: list) -> None:
    """Local: run each job in order here. Slurm / Ray: run the last; datatrove launches its `depends`."""
    if not executors:
        return
    with quiet_datatrove():
        if cfg.executor == "local":
            for ex in executors:
                ex.run()
        else:
            executors[-1].run()


FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE")


def slurm_job_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} from `sacct` (array tasks folded: a failed task fails its job), else `squeue` (running
    and pending jobs only); {} when neither command exists. States as Slurm spells them (COMPLETED, FAILED...)."""
    import shutil
    import subprocess

    ids = [str(j) for j in job_ids if j]
    if not ids:
        return {}
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)],
                             capture_output=True, text=True, check=False).stdout
    elif shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(ids)],
                             capture_output=True, text=True, check=False).stdout
    else:
        return {}
    states: dict[str, str] = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        jid, state = line.split("|", 1)
        base, state = jid.split("_")[0].split(".")[0], state.split()[0] if state.split() else ""
        if base not in states or state in FAILED_STATES or states[base] == "COMPLETED":
            states[base] = state  # the worst task's state stands for the array
    return states


def slurm_jobs(executors: list) -> list[tuple[str, str, str]]:
    """(job id, job name, log folder) of each launched Slurm job."""
    out = []
    for ex in executors:
        jid = getattr(ex, "job_id", None)
        if jid:
            out.append((str(jid), getattr(ex, "job_name", "?"), str(ex.logging_dir.resolve_paths("slurm_logs"))
                        if hasattr(ex.logging_dir, "resolve_paths") else str(ex.logging_dir)))
    return out
