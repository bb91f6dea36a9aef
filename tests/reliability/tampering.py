"""Tampering cases on a finished run: a flipped byte in each stage's outputs, outputs that point outside their folder,
a symlinked output pointing out; each must be caught by `gristmill manifest verify` and refused by the next stage."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import RECIPE, STAGES, Result, run_cli


@dataclass
class Outcome:
    case: str
    caught: bool
    detail: str


def flip_byte(path: Path) -> Callable[[], None]:
    """XOR one byte in the middle of `path` with 0x01 (same size; the mtime moves as any edit's does);
    returns the function that writes the original bytes back."""
    data = path.read_bytes()
    i = len(data) // 2
    path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] if data else b"\x00")
    return lambda: path.write_bytes(data)


def next_stage_command(stage: str, run: Path, out: Path) -> list | None:
    """The command that reads `stage`'s folder next in tiny.toml; None for the last stage."""
    d = run / "data"
    return {
        "curate": ["tokenize", "--input", run / "curate", "--out", out, "--config", RECIPE],
        "tokenize": ["pretrain", "--data", run / "tokenize", "--out", out, "--config", RECIPE],
        "pretrain": ["align", "sft", "--model", run / "pretrain", "--data", d / "sft" / "train.jsonl", "--out", out,
                     "--config", RECIPE],
        "sft": ["align", "reward", "--model", run / "sft", "--data", d / "preference" / "train.jsonl", "--out", out,
                "--config", RECIPE],
        "reward": ["align", "dpo", "--model", run / "sft", "--data", d / "preference" / "train.jsonl", "--reward",
                   run / "reward", "--out", out, "--config", RECIPE],
        # ppo takes the sft model, not dpo's: the run's planner is what reads dpo's folder before ppo runs
        "dpo": ["run", RECIPE, "--out", run, "--from", "ppo"],
    }.get(stage)


def refused(r: Result, out: Path | None, names: list[str]) -> str | None:
    """None when the command refused cleanly: non-zero exit, a `gristmill:` line naming a file, no traceback,
    and no manifest written in its output folder."""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("gristmill:")]
    if r.rc == 0:
        return "accepted (exit 0)"
    if "Traceback" in r.stderr:
        return "traceback: " + r.stderr.strip().splitlines()[-1][:300]
    if not lines or not any(n in lines[-1] for n in names):
        return f"no `gristmill:` line naming {names}: {(lines or r.stderr.strip().splitlines() or [''])[-1][:300]}"
    if out is not None and (out / "manifest.json").exists():
        return f"{out}/manifest.json was written"
    return None


def verify_fails(folder: Path) -> str | None:
    """None when `gristmill manifest verify` exits non-zero with a FAILED line (the CLI, every byte read)."""
    r = run_cli("manifest", "verify", folder, cwd=folder.parent)
    # a mismatch ends with a FAILED line; a manifest that cannot be read at all, with one `gristmill: error:` line
    if r.rc == 0 or "Traceback" in r.stderr or not ("FAILED" in r.stderr or "gristmill: error:" in r.stderr):
        return f"verify exit {r.rc}: {(r.stderr or r.stdout).strip()[-300:]}"
    return None


def flipped_outputs(run: Path, stages: list[str] = STAGES, log=print) -> list[Outcome]:
    """Every output of every stage, one flipped byte at a time: the in-process verify (what the CLI calls) must
    name that file. Cheap: no subprocess per file."""
    from gristmill.manifests import read_manifest, verify

    outcomes = []
    for s in stages:
        m = read_manifest(run / s)
        for o in m.outputs:
            restore = flip_byte(run / s / o.path)
            try:
                problems = verify(run / s)
            finally:
                restore()
            ok = any(o.path in p or str(run / s / o.path) in p for p in problems)
            outcomes.append(Outcome(f"{s}/{o.path}: flipped byte, verify", ok, "; ".join(problems)[:200]))
        if verify(run / s):
            raise RuntimeError(f"{run / s} does not verify after restoring its outputs")
    return outcomes


def flipped_then_next_stage(run: Path, work: Path, stages: list[str] = STAGES) -> list[Outcome]:
    """Per stage, its largest output flipped: `gristmill manifest verify` fails and the next stage refuses."""
    from gristmill.manifests import read_manifest

    outcomes = []
    for s in stages:
        m = read_manifest(run / s)
        # the largest file of what the next stage reads (documents, shards, weights), not a plot or a report
        o = max([o for o in m.outputs if o.kind not in ("plot", "report", "log")] or m.outputs, key=lambda o: o.bytes)
        restore = flip_byte(run / s / o.path)
        try:
            problem = verify_fails(run / s)
            outcomes.append(Outcome(f"{s}/{o.path}: flipped byte, `gristmill manifest verify`", problem is None,
                                    problem or ""))
            cmd = next_stage_command(s, run, work / f"next-{s}")
            if cmd is not None and (s != "dpo" or "ppo" in stages):
                r = run_cli(*cmd, cwd=work)
                problem = refused(r, None if cmd[0] == "run" else work / f"next-{s}", [o.path.split("/")[-1], s])
                outcomes.append(Outcome(f"{s}/{o.path}: flipped byte, next stage `gristmill {' '.join(map(str, cmd[:2]))}`",
                                        problem is None, problem or ""))
        finally:
            restore()
    return outcomes


def _rewrite_manifest(folder: Path, edit: Callable[[dict], None]) -> Callable[[], None]:
    """Edit manifest.json's dict and re-seal its digest, so that only the edit itself can be what is caught."""
    from gristmill.manifests.schema import content_digest

    mp = folder / "manifest.json"
    original = mp.read_bytes()
    d = json.loads(original)
    edit(d)
    d.pop("digest", None)
    d["digest"] = content_digest(d)
    mp.write_text(json.dumps(d, indent=2))
    return lambda: mp.write_bytes(original)


def escapes(run: Path, work: Path, stage: str = "curate", *, next_stage: bool = True) -> list[Outcome]:
    """`stage`'s manifest with an output path leaving the folder ('..', absolute), and one of its outputs replaced by
    a symlink to an identical file outside: verify fails and the next stage refuses, each time."""
    import shutil

    outside = work / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    folder = run / stage
    outcomes = []
    stats = json.loads((folder / "manifest.json").read_text())["outputs"][-1]["path"]  # a small file (report.md)

    def retarget(path: str):
        def edit(d: dict) -> None:
            d["outputs"][-1]["path"] = path
        return edit

    shutil.copy(folder / stats, outside / "copy")
    escape_paths = {"output path '../…' outside the folder": "../data/summary.json",
                    "absolute output path": str(outside / "copy")}
    for label, path in escape_paths.items():
        restore = _rewrite_manifest(folder, retarget(path))
        try:
            outcomes += _both(folder, run, work, stage, label, [path, "manifest"], next_stage)
        finally:
            restore()

    original = folder / stats
    saved = original.read_bytes()
    original.unlink()
    os.symlink(outside / "copy", original)  # the same bytes: only where it points is wrong
    try:
        outcomes += _both(folder, run, work, stage, "symlinked output pointing out", [stats, "outside"], next_stage)
    finally:
        original.unlink()
        original.write_bytes(saved)
    return outcomes


def _both(folder: Path, run: Path, work: Path, stage: str, label: str, names: list[str],
          next_stage: bool) -> list[Outcome]:
    """`gristmill manifest verify` fails on `folder`, and (when `next_stage`) the next stage refuses it."""
    out = []
    problem = verify_fails(folder)
    out.append(Outcome(f"{stage}: {label}, `gristmill manifest verify`", problem is None, problem or ""))
    if not next_stage:
        return out
    tag = label.split()[0].strip("'")
    cmd = next_stage_command(stage, run, work / f"next-{stage}-{tag}")
    r = run_cli(*cmd, cwd=work)
    problem = refused(r, work / f"next-{stage}-{tag}", names)
    out.append(Outcome(f"{stage}: {label}, next stage `gristmill {cmd[0]}`", problem is None, problem or ""))
    return out


def tamper_suite(run: Path, work: Path, *, stages: list[str] = STAGES, log=print) -> tuple[int, int, list[str]]:
    """(tamperings caught, tamperings made, failure lines) on `run`, which is restored after each case."""
    work.mkdir(parents=True, exist_ok=True)
    outcomes = flipped_outputs(run, stages) + flipped_then_next_stage(run, work, stages) + escapes(run, work)
    for o in outcomes:
        if not o.caught or "flipped byte, verify" not in o.case:
            log(f"  tamper: {o.case}: {'caught' if o.caught else 'NOT CAUGHT: ' + o.detail}")
    flips = [o for o in outcomes if "flipped byte, verify" in o.case]
    log(f"  tamper: every output flipped one at a time: {sum(o.caught for o in flips)}/{len(flips)} caught by verify")
    return (sum(o.caught for o in outcomes), len(outcomes),
            [f"{o.case}: {o.detail}" for o in outcomes if not o.caught])
