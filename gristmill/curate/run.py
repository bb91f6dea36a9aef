"""`run_curate`: the curate stage's entry point (the stage contract around the datatrove jobs)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from gristmill.config import to_dict
from gristmill.curate import CurateError
from gristmill.curate.config import CurateConfig
from gristmill.manifests import Manifest, ManifestError, begin_stage, read_manifest, sha256_file
from gristmill.stages import spec

WORK = "_work"  # inside the output folder: task files, datatrove logs and completions; removed when done
STATE = "STATE.json"


def _file_record(path: Path) -> dict:
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def run_curate(config: CurateConfig, inputs: dict[str, list[Path]], out_dir: Path, *, force: bool = False,
               keep_work: bool = False) -> Manifest:
    """Curate `inputs["data"]` (files, folders) into `out_dir`. Optional inputs: "reference" (a reference
    LM: reference-lm folder, ARPA/KenLM file or causal LM folder) turns the perplexity filter on;
    "quality" (a quality-model folder or fastText model) turns the quality filter on; "decontaminate"
    (evaluation sets: JSONL / JSON / Parquet / text files) turns decontamination on.

    Resumable: finished tasks of an interrupted run (same id) are kept; `force` starts over.
    With the local executor and workers > 1, a script must call this under `if __name__ == "__main__":`
    (the worker processes import the script again). On Slurm / Ray the work folder (task files,
    datatrove logs) is kept for inspection; locally it is removed once the manifest is written."""
    from gristmill.curate.executors import build_executors, run_executors, slurm_jobs
    from gristmill.curate.langid import resolve_model_path
    from gristmill.curate.pipeline import build_jobs
    from gristmill.curate.readers import check_parquet_columns, plan_units

    out_dir = Path(out_dir)
    _check_not_a_pool_child(config)
    start = begin_stage("curate", to_dict(config), inputs, out_dir, expect=spec("curate").expect, force=force)
    if start.done:
        return start.done
    m = start.manifest
    data = [Path(p) for p in inputs.get("data", [])]
    if not data:
        raise CurateError("curate needs at least one --input (WARC/WET/JSONL/Parquet files or a folder of .html)")
    units = plan_units(data, config.readers, split_bytes(config, data))
    check_parquet_columns([p for u in units for p in u.paths], config.readers)
    if not units:
        raise CurateError(f"no input files found in {', '.join(map(str, data))}")

    models: dict[str, str | None] = {"langid": None, "reference": None, "quality": None, "url_blocklist": None,
                                     "decontaminate": None}
    model_files: dict[str, dict] = {}
    if config.langid.enabled:
        lid = resolve_model_path(config.langid.model)
        models["langid"] = str(lid.resolve())
        model_files["langid"] = _file_record(lid)
    if config.heuristics.c4.bad_words:
        bw = Path(config.heuristics.c4.bad_words).expanduser()
        if not bw.is_file():
            raise CurateError(f"curate.heuristics.c4.bad_words={bw}: no such file")
        model_files["bad_words"] = _file_record(bw)
    if config.url_filter.enabled:
        models["url_blocklist"] = _url_lists(config, model_files)
    for role in ("reference", "quality"):
        paths = inputs.get(role) or []
        if len(paths) > 1:
            raise CurateError(f"input {role!r} takes one path, got {len(paths)}")
        if paths:
            models[role] = str(Path(paths[0]).resolve())

    n_tasks = min(config.tasks, len(units)) if config.tasks else len(units)
    shared = {"slurm": config.slurm.work_dir, "ray": config.ray.work_dir}.get(config.executor, "")
    work = Path(shared) / f"curate-{m.id}" if shared else out_dir / WORK
    _prepare_work(work, m.id, [[*u.paths, u.start, u.end] for u in units], force=force)
    evals = [Path(p) for p in inputs.get("decontaminate") or []]
    if evals:  # once per run, before any task: each task memory-maps the index
        from gristmill.curate.decontaminate import build_index

        sets = build_index(evals, config.decontamination, work / "decontamination")
        models["decontaminate"] = str((work / "decontamination").resolve())
    truth = _truth(inputs.get("truth") or [])
    plan = {
        "config": to_dict(config), "out_dir": str(out_dir.resolve()), "work_dir": str(work.resolve()),
        "n_tasks": n_tasks, "models": models, "manifest": m.to_dict(), "truth": str(truth) if truth else None,
        "keep_extracted": truth is not None,
        "events": [{"kind": "inputs", "detail": f"{len(units)} task units from {len(data)} input path(s); "
                    f"{n_tasks} datatrove task(s)"}],
    }
    plan["manifest"]["metrics"] = {"model_files": model_files}
    if evals:
        plan["manifest"]["metrics"]["decontamination"] = {"ngram": config.decontamination.ngram,
                                                          "action": config.decontamination.action, "sets": sets}
        for s in sets:
            if not s["ngrams"]:  # e.g. the demo's task prompts: every text is shorter than the n-gram
                plan["events"].append({"kind": "warning", "detail": f"evaluation set {s['set']}: none of its "
                                       f"{s['texts']} texts has {config.decontamination.ngram} words; it can match "
                                       "nothing (lower curate.decontamination.ngram to check shorter texts)"})
    progress = config.executor == "local" and config.workers == 1 and sys.stderr.isatty()
    jobs = build_jobs(plan, units, progress=progress)
    executors = build_executors(config, jobs, work)
    run_executors(config, executors)
    result = _wait_for_manifest(out_dir, m.id, slurm=config.executor == "slurm", config=config,
                                jobs=slurm_jobs(executors) if config.executor == "slurm" else [])
    if config.executor == "local" and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _url_lists(config: CurateConfig, model_files: dict[str, dict]) -> str | None:
    """Check the user's list files (a missing one names its field), record every list file's sha256, and
    return the bundled domain list's hash index (built once per machine), or None without the bundled lists."""
    from gristmill.curate.urlfilter import domain_index, tarball_path, user_lists

    u = config.url_filter
    user_lists(u)  # raises on a missing file, naming curate.url_filter.<field> and the path
    for key in ("domain_files", "url_files"):
        for i, f in enumerate(getattr(u, key)):
            model_files[f"url_filter.{key}[{i}]"] = _file_record(Path(f).expanduser())
    if not u.integrated_lists:
        return None
    rec = _file_record(tarball_path())
    model_files["url_blocklist"] = rec
    return str(domain_index(rec["sha256"]))


def _truth(paths: list) -> Path | None:
    """The explicit ground truth (input role "truth"; recorded in the manifest, so it changes the id)."""
    if not paths:
        return None
    p = Path(paths[0])
    if len(paths) > 1 or not p.is_file() or not p.name.endswith(".jsonl"):
        raise CurateError(f"--truth {' '.join(map(str, paths))}: give one truth.jsonl file (one record per "
                          "WARC record, as `gristmill demo-data` writes it)")
    return p


def _check_not_a_pool_child(config: CurateConfig) -> None:
    """A worker process of the local executor re-imports the caller's __main__ module; a script that
    calls run_curate at module level without a main guard would start the whole run again there."""
    import multiprocessing

    import multiprocess

    if multiprocessing.parent_process() is not None or multiprocess.parent_process() is not None:
        raise CurateError("run_curate was called inside a worker process: a script that runs the curate stage with "
                          "workers > 1 must call it under `if __name__ == \"__main__\":` (the worker processes "
                          "import the script again)")


def split_bytes(config: CurateConfig, data: list[Path]) -> int:
    """Byte size above which a WARC file is read in ranges (see ReadersConfig.split_bytes)."""
    if config.readers.split_bytes >= 0:
        return config.readers.split_bytes
    if config.executor != "local":
        return 64 << 20
    if config.workers <= 1:
        return 0
    files = [f for p in data for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    return max(1 << 20, total // (4 * config.workers))


def _prepare_work(work: Path, run_id: str, unit_paths: list, *, force: bool) -> None:
    """Keep the work folder of an interrupted run with this id (resume); otherwise start it clean."""
    state = work / STATE
    want = {"id": run_id, "units": [list(p) for p in unit_paths]}
    if work.exists():
        try:
            same = json.loads(state.read_text()) == want
        except (OSError, ValueError):
            same = False
        if force or not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not state.exists():
        state.write_text(json.dumps(want))
    # the global jobs always run again on resume (they are cheap and read every task's files)
    for name in ("select", "signatures", "buckets", "finalize"):
        shutil.rmtree(work / "logs" / name, ignore_errors=True)
    shutil.rmtree(work / "minhash", ignore_errors=True)
    shutil.rmtree(work / "decisions", ignore_errors=True)


def _wait_for_manifest(out_dir: Path, run_id: str, *, slurm: bool, config: CurateConfig | None = None,
                       jobs: list[tuple[str, str, str]] = (), job_states=None) -> Manifest:
    """The finalize job writes the manifest; on Slurm the jobs run elsewhere, so wait for it, and stop with the
    job id and its log folder as soon as a job failed or was cancelled (sacct / squeue), when every job ended
    without a manifest, or after curate.slurm.wait_hours."""
    from gristmill.curate.executors import FAILED_STATES, slurm_job_states

    job_states = job_states or slurm_job_states
    poll_s = config.slurm.poll_seconds if config else 30.0
    limit = config.slurm.wait_hours * 3600 if config else 0.0
    started, ended_without_manifest = time.monotonic(), 0
    while True:
        try:
            m = read_manifest(out_dir)
            if m.id == run_id:
                return m
        except ManifestError:
            pass
        if not slurm:
            raise CurateError(f"{out_dir}: the curate jobs ended without writing manifest.json; see the task logs "
                              f"in {out_dir / WORK / 'logs'} and rerun to resume")
        states = job_states([j for j, _, _ in jobs]) if jobs else {}
        for jid, name, logs in jobs:
            if states.get(jid) in FAILED_STATES:
                raise CurateError(f"Slurm job {jid} ({name}) ended {states[jid]}; its logs are in {logs}. Fix the "
                                  "cause and run the same command again: finished tasks are kept")
        if jobs and states and all(states.get(j) == "COMPLETED" for j, _, _ in jobs):
            ended_without_manifest += 1  # one more look: the manifest may land just after the last job ends
            if ended_without_manifest > 1:
                raise CurateError(f"every Slurm job ({', '.join(j for j, _, _ in jobs)}) completed but {out_dir} "
                                  f"has no manifest for run {run_id}; see the logs in {jobs[-1][2]}")
        if limit and time.monotonic() - started > limit:
            raise CurateError(f"{out_dir}: no manifest after curate.slurm.wait_hours={config.slurm.wait_hours}; "
                              f"the jobs ({', '.join(j for j, _, _ in jobs) or 'unknown ids'}) may still be running: "
                              "check them with squeue, or raise the limit")
        time.sleep(poll_s)