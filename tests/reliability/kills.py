"""kill -9 cases: `gristmill run` killed (process group, SIGKILL) inside and between stages, resumed, compared bit for bit."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import PAGES, RECIPE, STAGES, diff_hashes, env, gristmill_cmd, new_run, output_hashes, run_cli

POLL_S = 0.01  # how often the killer looks at the run folder (seconds)


@dataclass
class Target:
    stage: str
    where: str  # "inside": fraction of the stage's reference duration after its folder appears; "after": its manifest
    fraction: float = 0.0


@dataclass
class Kill:
    target: Target
    landed: str  # what the run folder showed at the kill: "inside <stage>" or "between stages (after <stage>)"
    resumed_ok: bool = True


@dataclass
class Chain:
    kills: list[Kill] = field(default_factory=list)
    identical: bool = False
    diffs: list[str] = field(default_factory=list)
    error: str = ""


def state(run_dir: Path, stages: list[str]) -> dict[str, str]:
    """stage -> "" (not started), "running" (folder, no manifest) or "done" (manifest written)."""
    return {s: ("done" if (run_dir / s / "manifest.json").is_file() else "running" if (run_dir / s).is_dir() else "")
            for s in stages}


def run_args(run_dir: Path, stages: list[str]) -> list:
    """`gristmill run` of tiny.toml up to the last of `stages` (a prefix of its [run] stages)."""
    return ["run", RECIPE, "--out", run_dir, "--until", stages[-1]]


def reference(run_dir: Path, stages: list[str] = STAGES, timeout: float = 900) -> tuple[dict, dict[str, float]]:
    """An uninterrupted run: its output hashes, and each stage's duration (folder created -> manifest), seconds."""
    seen: dict[str, list[float]] = {s: [] for s in stages}
    log_path = run_dir / "reference.log"  # a file, not a pipe: progress bars would fill a pipe nobody reads yet
    proc = subprocess.Popen(gristmill_cmd(*run_args(run_dir, stages)), cwd=run_dir.parent, env=env(),
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"), start_new_session=True)
    t0 = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic()
        for s, st in state(run_dir, stages).items():
            if st and len(seen[s]) == 0:
                seen[s].append(now)
            if st == "done" and len(seen[s]) == 1:
                seen[s].append(now)
        if now - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"the reference run of {RECIPE} took over {timeout} s")
        time.sleep(POLL_S)
    err = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run of {RECIPE} failed (exit {proc.returncode}):\n{err[-3000:]}")
    durations = {s: (v[1] - v[0]) if len(v) == 2 else 0.5 for s, v in seen.items()}
    return output_hashes(run_dir, stages), durations


def kill_once(run_dir: Path, target: Target, durations: dict[str, float], stages: list[str] = STAGES,
              timeout: float = 900) -> str:
    """Start `gristmill run`, SIGKILL its whole process group at the target; what the folder showed then.
    A run that finishes before the target is reached is reported as "finished" (no kill happened)."""
    before = state(run_dir, stages)
    if before[target.stage] == "done":  # an earlier kill's rerun finished it: kill in the first unfinished stage
        todo = [s for s in stages if before[s] != "done"]
        if not todo:
            return "finished"
        target = Target(todo[0], "inside", 0.5)
    proc = subprocess.Popen(gristmill_cmd(*run_args(run_dir, stages)), cwd=run_dir.parent, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0, appeared = time.monotonic(), None
    try:
        while proc.poll() is None:
            st = state(run_dir, stages)
            now = time.monotonic()
            if target.where == "after" and st[target.stage] == "done":
                break
            if target.where == "inside" and st[target.stage]:
                appeared = appeared or now
                if now - appeared >= target.fraction * durations[target.stage] or st[target.stage] == "done":
                    break
            if now - t0 > timeout:
                break
            time.sleep(POLL_S)
        else:
            return "finished"
        st = state(run_dir, stages)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a curate worker the run left behind
        except ProcessLookupError:
            pass
    running = [s for s, v in st.items() if v == "running"]
    if running:
        return f"inside {running[0]}"
    last = [s for s, v in st.items() if v == "done"]
    return f"between stages (after {last[-1] if last else 'nothing'})"


def plan_chains(n_kills: int, rng: random.Random, chains: int, stages: list[str] = STAGES) -> list[list[Target]]:
    """`n_kills` targets spread over `chains` runs, each chain in pipeline order: every stage killed inside at a
    random fraction of its duration, about one in five kills between stages (right after a manifest)."""
    targets = [Target(stages[i % len(stages)], "inside", round(rng.uniform(0.05, 0.95), 3)) for i in range(n_kills)]
    for i in range(4, n_kills, 5):
        targets[i] = Target(rng.choice(stages[:-1] or stages), "after")
    out: list[list[Target]] = [[] for _ in range(chains)]
    for i, t in enumerate(targets):
        out[i % chains].append(t)
    order = {s: i for i, s in enumerate(stages)}
    return [sorted(c, key=lambda t: (order[t.stage], t.where == "after", t.fraction)) for c in out]


def run_chain(run_dir: Path, targets: list[Target], ref: dict, durations: dict[str, float],
              stages: list[str] = STAGES) -> Chain:
    """Kill at each target in turn (each kill's rerun is the next kill's run), then resume to the end and compare."""
    chain = Chain()
    for t in targets:
        landed = kill_once(run_dir, t, durations, stages)
        chain.kills.append(Kill(t, landed, resumed_ok=landed != "finished"))
    r = run_cli(*run_args(run_dir, stages), cwd=run_dir.parent)
    if r.rc != 0:
        chain.error = f"resume failed (exit {r.rc}): {r.stderr[-2000:]}"
        return chain
    chain.diffs = diff_hashes(ref, output_hashes(run_dir, stages))
    chain.identical = not chain.diffs
    return chain


def kill_suite(work: Path, *, n_kills: int, chains: int, seed: int, stages: list[str] = STAGES, pages: int = PAGES,
               log=print) -> tuple[int, int, list[str], Path]:
    """(kills survived bit-identically, kills made, failure lines). A kill survives when its chain resumes to
    outputs identical to the uninterrupted reference run's."""
    rng = random.Random(seed)
    log(f"kills: seed {seed}, {n_kills} kills in {chains} chain(s)")
    # every run is made at the same path (work/run): outputs that record input paths then compare byte for byte
    run_dir = new_run(work / "run", pages)
    ref, durations = reference(run_dir, stages)
    ref_dir = work / "reference"
    shutil.copytree(run_dir, ref_dir, symlinks=True)
    log("kills: reference run stage seconds " + ", ".join(f"{s} {d:.1f}" for s, d in durations.items()))
    survived, failures = 0, []
    for i, targets in enumerate(plan_chains(n_kills, rng, chains, stages)):
        for s in stages:
            shutil.rmtree(run_dir / s)
        shutil.rmtree(run_dir / ".cache", ignore_errors=True)  # dpo's reference log-probs: a resume must not lean on them
        chain = run_chain(run_dir, targets, ref, durations, stages)
        for k in chain.kills:
            ok = chain.identical and k.resumed_ok
            log(f"  chain {i}: kill at {k.target.stage} {k.target.where} {k.target.fraction:.2f} -> {k.landed}: "
                f"{'bit-identical' if ok else 'FAILED'}")
        survived += sum(chain.identical and k.resumed_ok for k in chain.kills)
        if not chain.identical:
            failures.append(f"chain {i}: {chain.error or '; '.join(chain.diffs[:10])}")
            shutil.copytree(run_dir, work / f"failed-chain{i}", symlinks=True, ignore=shutil.ignore_patterns("data"))
    return survived, n_kills, failures, ref_dir
