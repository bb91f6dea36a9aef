"""Recipes and runs: plan which stages run or are skipped (and why), then run them in order.

A recipe is TOML:

    [run]
    stages = ["curate", "tokenize"]          # in order

    [inputs]                                  # per stage: role = path or [paths]
    curate = { data = "{run}/data/web.warc.gz" }
    tokenize = { data = "@curate" }           # @name: that stage's folder in this run

    [curate]                                  # the stage's config section
    languages = ["en"]

A stage may run twice under two names: `[run] uses = { grpo = "ppo" }` makes the step `grpo` a ppo
stage with its own [grpo] section, inputs and folder. A step without a section of its own takes the section of
the stage it uses (`eval-sft = "eval"` reads [eval]), so five eval steps share one.

Relative raw paths are read from the recipe's folder; `{run}` is the run folder and `{recipe}`
the recipe's folder. Each stage runs in RUN_DIR/<stage>/. A stage's id is derived from its
resolved config and its inputs' ids before anything runs, so the plan knows what a changed
config invalidates downstream without running anything.
"""
from __future__ import annotations

import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gristmill import config as cfg
from gristmill.errors import GristmillError
from gristmill.manifests import (MANIFEST_NAME, InputRecord, Manifest, ManifestError, compute_id, finished,
                                 input_records, read_manifest, verify)
from gristmill.manifests.store import input_ids
from gristmill.manifests.lock import folder_lock
from gristmill.stages import StageSpec


class RunError(GristmillError):
    """A recipe that cannot run as written: the message says what to change."""



# ---------------------------------------------------------------------------------------------
# planning


@dataclass
class Step:
    name: str
    spec: StageSpec | None
    out_dir: Path
    config: Any = None
    config_dict: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    id: str = ""
    action: str = "run"  # run | skip | excluded
    reason: str = ""


def resolve_inputs(spec: StageSpec, raw: dict[str, Any], *, recipe_dir: Path, run_dir: Path,
                   where: str) -> dict[str, list[Path | str]]:
    """Recipe input values -> role -> paths; '@stage' entries are kept as strings for the planner."""
    roles = {r.name: r for r in spec.roles}
    unknown = sorted(set(raw) - set(roles))
    if unknown:
        raise RunError(f"{where}: unknown input role(s) {', '.join(unknown)}; {spec.name} takes {', '.join(roles)}")
    out: dict[str, list[Path | str]] = {}
    for name, role in roles.items():
        value = raw.get(name)
        if value is None:
            if role.required:
                raise RunError(f"{where}: missing input {name!r} ({role.help}); give it in the recipe's [inputs] "
                               f"or on the command line: --set {_input_key(where, name)}=PATH")
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > 1 and not role.many:
            raise RunError(f"{where}: input {name!r} takes one path, got {len(values)}")
        paths: list[Path | str] = []
        for v in values:
            if not isinstance(v, str):
                raise RunError(f"{where}: input {name!r}: expected a path string, got {v!r}")
            if v.startswith("@"):
                paths.append(v)
                continue
            p = v.replace("{run}", str(run_dir)).replace("{recipe}", str(recipe_dir))
            p = Path(p).expanduser()
            p = p if p.is_absolute() else recipe_dir / p
            paths.extend(expand_glob(p) if role.many else [p])
        out[name] = paths
    return out


def expand_glob(p: Path) -> list[Path]:
    """A path with * ? [ expands to its matches (sorted); no match is an error, never silence."""
    s = str(p)
    if not any(c in s for c in "*?["):
        return [p]
    hits = sorted(glob.glob(s, recursive=True))
    if not hits:
        raise RunError(f"{s}: the pattern matches no file")
    return [Path(h) for h in hits]


def plan(recipe: dict[str, Any], registry: dict[str, StageSpec], *, run_dir: Path, recipe_dir: Path,
         overrides: Iterable[str] = (), start: str | None = None, until: str | None = None) -> list[Step]:
    """Every stage of the recipe with its action and reason. Computes ids; runs nothing."""
    run_dir = Path(run_dir).absolute()  # `{run}` must mean the same folder whatever the recipe's folder is
    recipe = cfg.apply_overrides(recipe, [_cwd_relative(o) for o in overrides])
    run_table = recipe.get("run", {})
    names = run_table.get("stages")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunError("recipe: [run] stages must list the stages to run, e.g. stages = [\"curate\", \"tokenize\"]")
    unknown_sections = sorted(set(recipe) - {"run", "inputs"} - set(names) - set(registry))
    if unknown_sections:
        raise RunError(f"recipe: section(s) [{'], ['.join(unknown_sections)}] name no stage of this recipe "
                       f"({', '.join(names)})")
    for bound, label in ((start, "--from"), (until, "--until")):
        if bound is not None and bound not in names:
            raise RunError(f"{label} {bound}: not a stage of this recipe ({', '.join(names)})")
    uses = run_table.get("uses", {})
    if not isinstance(uses, dict) or not all(isinstance(v, str) and v in registry for v in uses.values()):
        raise RunError(f"recipe: [run] uses maps step names to built-in stages, e.g. uses = {{ grpo = \"ppo\" }}; "
                       f"known stages: {', '.join(registry)}")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1

    steps: list[Step] = []
    planned: dict[str, Step] = {}
    rerun: set[str] = set()
    for i, name in enumerate(names):
        if name in planned:
            raise RunError(f"recipe: stage {name!r} is listed twice in [run] stages")
        spec = registry.get(uses.get(name, name))
        step = Step(name=name, spec=spec, out_dir=run_dir / name)
        steps.append(step)
        planned[name] = step
        if spec is None:
            raise RunError(f"recipe: unknown stage {name!r}; known stages: {', '.join(registry)}")
        section = recipe.get(name, recipe.get(uses[name], {}) if name in uses else {})
        step.config = cfg.build(spec.config_cls(), section, section=name)
        step.config_dict = cfg.to_dict(step.config)
        raw_inputs = recipe.get("inputs", {}).get(name, {})
        resolved = resolve_inputs(spec, raw_inputs, recipe_dir=recipe_dir, run_dir=run_dir, where=f"[inputs] {name}")
        ids: list[InputRecord] = []
        upstream_rerun = []
        raw_paths: dict[str, list[Path]] = {}
        for role, paths in resolved.items():
            accepted = spec.expect[role]
            for p in paths:
                if isinstance(p, str):  # @stage
                    up = planned.get(p[1:])
                    if up is None:
                        raise RunError(f"[inputs] {name}.{role} = {p!r}: no earlier stage {p[1:]!r} in this recipe")
                    if up.spec is not None and up.spec.name not in accepted:
                        raise RunError(f"[inputs] {name}.{role} = {p!r}: {name} takes {', '.join(accepted)} here, "
                                       f"not {up.spec.name}")
                    ids.append(InputRecord(role=role, path=str(up.out_dir), sha256="", stage=up.name, id=up.id))
                    step.inputs.setdefault(role, []).append(up.out_dir)
                    if up.name in rerun:
                        upstream_rerun.append(up.name)
                else:
                    if not p.exists():
                        raise RunError(f"[inputs] {name}.{role}: {p} does not exist; change it in the "
                                       f"recipe's [inputs] or give --set inputs.{name}.{role}=PATH")
                    raw_paths.setdefault(role, []).append(p)
                    step.inputs.setdefault(role, []).append(p)
        try:
            ids += input_records(raw_paths, spec.expect, step.out_dir)
        except ManifestError as e:
            raise RunError(f"[inputs] {name}: {e}") from None
        step.id = compute_id(spec.name, step.config_dict, input_ids(ids))  # as the stage itself derives it

        if not first <= i <= last:
            step.action = "excluded"
            step.reason = "before --from" if i < first else "after --until"
            done = finished(step.out_dir, step.id)
            if i < first and done is None:
                raise RunError(f"--from {start}: earlier stage {name!r} has no finished output with id {step.id} "
                               f"in {step.out_dir}; run it first (drop --from)")
            continue
        done = finished(step.out_dir, step.id)
        if done is not None and not upstream_rerun:
            step.action, step.reason = "skip", f"finished (id {step.id}, outputs verified)"
            continue
        rerun.add(name)
        step.action = "run"
        step.reason = _why_run(step, upstream_rerun)
    return steps


def _why_run(step: Step, upstream_rerun: list[str]) -> str:
    mp = step.out_dir / MANIFEST_NAME
    if not mp.is_file():
        return "no finished output yet" if not step.out_dir.exists() else "unfinished output (no manifest)"
    try:
        old = read_manifest(mp)
    except ManifestError:
        return "existing manifest is unreadable"
    if old.id == step.id:
        if upstream_rerun:
            return f"inputs re-run: {', '.join(upstream_rerun)}"
        return "outputs do not verify" if verify(mp, cached=True) else "an input stage ran again since"
    changed = sorted(k for k in set(old.config) | set(step.config_dict) if old.config.get(k) != step.config_dict.get(k))
    if changed:
        return f"config changed ({', '.join(changed)}): id {old.id} -> {step.id}"
    if upstream_rerun:
        return f"inputs change: {', '.join(upstream_rerun)} re-runs"
    return f"inputs changed: id {old.id} -> {step.id}"


def _input_key(where: str, role: str) -> str:
    """'[inputs] curate', 'data' -> 'inputs.curate.data': the --set key of a recipe input."""
    return f"inputs.{where.removeprefix('[inputs] ')}.{role}"


def _cwd_relative(item: str) -> str:
    """`--set inputs.STAGE.ROLE=PATH`: a relative PATH typed on the command line means the current
    folder's, not the recipe's (a recipe's own relative paths stay relative to the recipe)."""
    parts, value = cfg.parse_override(item)
    if parts[0] != "inputs" or len(parts) != 3:
        return item
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        return item  # resolve_inputs names the wrong type
    fixed = [v if v.startswith("@") or "{" in v or Path(v).expanduser().is_absolute() else str(Path.cwd() / v)
             for v in values]
    return f"{'.'.join(parts)}={json.dumps(fixed if isinstance(value, list) else fixed[0])}"


def check_devices(steps: list[Step]) -> None:
    """Before the first stage runs: a stage set to `device = "cuda"` on a machine without CUDA fails now,
    not hours later after the stages before it (gpt2-124m.toml is GPU-only)."""
    want = [s for s in steps if s.action == "run" and getattr(s.config, "device", None) == "cuda"]
    if not want:
        return
    import torch

    if not torch.cuda.is_available():
        names = ", ".join(s.name for s in want)
        sets = " ".join(f"--set {s.name}.device=cpu" for s in want)
        raise RunError(f"[{want[0].name}] device = \"cuda\" but torch sees no CUDA device on this machine: "
                       f"stage(s) {names} of this recipe are GPU-only; run it on a GPU, or try it on the CPU "
                       f"(slow) with {sets}")


def format_plan(steps: list[Step]) -> str:
    width = max(len(s.name) for s in steps)
    return "\n".join(f"  {s.name:<{width}}  {s.action:<9}  {s.reason}" for s in steps)


def execute(steps: list[Step], *, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list[Manifest]:
    """Run the steps whose action is 'run', in order. A stage failure stops the run (it raises)."""
    manifests = []
    for step in steps:
        if step.action == "skip":
            log(f"[{step.name}] skipped: {step.reason}")
            continue
        if step.action != "run":
            continue
        log(f"[{step.name}] running: {step.reason}")
        # the stage folder's own lock too: a `gristmill <stage> --out RUN/<stage>` started by hand meanwhile is refused
        with folder_lock(step.out_dir, command=f"gristmill run, stage {step.name}"):
            m = step.spec.run_fn()(step.config, step.inputs, step.out_dir, force=False)
        if m.id != step.id:
            raise RunError(f"[{step.name}] the stage wrote id {m.id} but the plan derived {step.id}: "
                           "a stage must not change its config or inputs while it runs")
        manifests.append(m)
        log(f"[{step.name}] done: id {m.id}")
    return manifests


def load_recipe(path: str | Path) -> dict[str, Any]:
    return cfg.load_toml(path)
