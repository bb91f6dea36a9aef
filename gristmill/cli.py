"""The one entry point: `gristmill <stage> ...`, `gristmill run`, `gristmill manifest ...`, `gristmill demo`, `gristmill report`."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

from gristmill import __version__
from gristmill import config as cfg
from gristmill import runs
from gristmill.errors import GristmillError
from gristmill.manifests import format_lineage, lineage, read_manifest, verify
from gristmill.manifests.lock import folder_lock
from gristmill.stages import BUILTIN, StageSpec

EXIT_ERROR, EXIT_USAGE = 1, 2
REPO = Path(__file__).resolve().parent.parent
DEMO_RECIPE = REPO / "recipes" / "demo.toml"
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"


def registry() -> dict[str, StageSpec]:
    return {s.name: s for s in BUILTIN}


def _add_stage_parser(sub: argparse._SubParsersAction, spec: StageSpec) -> None:
    p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
    for role in spec.roles:
        p.add_argument(role.flag, dest=f"role_{role.name}", nargs="+" if role.many else None,
                       required=role.required, metavar="PATH", help=role.help)
    if spec.name == "eval":  # the one setting every eval command names: a shortcut for --set eval.tasks=[...]
        p.add_argument("--tasks", metavar="T1,T2,...", help="tasks or groups (core, smollm2, mmlu, chat), or "
                       "PATH.jsonl:FORMAT for a task file of your own; an unknown name lists the known ones")
    p.add_argument("--out", required=True, type=Path, help="the stage's output folder")
    p.add_argument("--config", type=Path, help=f"a recipe TOML; its [{spec.name}] section configures the stage")
    p.add_argument("--set", action="append", default=[], metavar=f"{spec.name}.KEY=VALUE", help="override a config value")
    p.add_argument("--force", action="store_true", help="redo the stage even when it already finished")
    _add_verify_inputs(p)
    p.set_defaults(func=_cmd_stage, spec=spec)


def _add_verify_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-inputs", action="store_true",
                   help="hash every input byte (default: trust the hash cache for files whose size, mtime and "
                        "inode are unchanged since they were hashed)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gristmill", description="From a web dump to an aligned small language model.")
    ap.add_argument("--version", action="version", version=f"gristmill {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    align = None
    for spec in BUILTIN:
        if spec.group == "align":
            if align is None:
                ag = sub.add_parser("align", help="alignment stages: sft, reward, dpo, ppo")
                align = ag.add_subparsers(dest="align_stage", metavar="STAGE", required=True)
            _add_stage_parser(align, spec)
        else:
            _add_stage_parser(sub, spec)

    m = sub.add_parser("manifest", help="verify, show or trace stage folders")
    msub = m.add_subparsers(dest="manifest_cmd", metavar="ACTION", required=True)
    for name, helptext in (("verify", "re-hash every output; exit 1 on any mismatch"),
                           ("lineage", "the chain of stages back to the raw inputs"),
                           ("show", "print the manifest")):
        mp = msub.add_parser(name, help=helptext)
        mp.add_argument("dir", type=Path)
        mp.set_defaults(func=_cmd_manifest)

    r = sub.add_parser("run", help="run a recipe's stages in order, skipping finished ones")
    r.add_argument("recipe", type=Path)
    _add_run_args(r, out_required=True)
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="write the built-in demo data and run recipes/demo.toml on it")
    _add_run_args(d, out_required=False)
    d.add_argument("--pages", type=int, default=None, help="web pages in the generated dump")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--benchmarks", type=Path, default=BENCHMARKS,
                   help="the field's benchmark data (CORE's files ...) the eval steps add to the demo's own tasks; "
                        "default: ../shared/data/benchmarks beside the checkout, when it is there")
    d.set_defaults(func=_cmd_demo)

    dd = sub.add_parser("demo-data", help="write the built-in synthetic web dump and task data")
    dd.add_argument("--out", type=Path, required=True)
    dd.add_argument("--pages", type=int, default=None)
    dd.add_argument("--seed", type=int, default=0)
    dd.set_defaults(func=_cmd_demo_data)

    ab = sub.add_parser("ablate", help="curation ablation: the recipe's model on raw vs curated text, "
                                       "compared on held-out clean text (DIR/ablation/ablation.md)")
    ab.add_argument("recipe", type=Path)
    ab.add_argument("--out", type=Path, required=True, help="the run folder ({run}); the ablation writes DIR/ablation/")
    ab.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override the recipe (pretrain.* applies to both arms)")
    ab.add_argument("--reference", type=Path, help="clean text to evaluate on (.txt one document a line, or .jsonl); "
                    "default: the recipe's reference-lm text, part of it held out")
    ab.add_argument("--heldout-percent", type=float, default=20.0, help="share of the reference documents held out")
    ab.add_argument("--force", action="store_true", help="redo the comparison (finished stages are still skipped)")
    _add_verify_inputs(ab)
    ab.set_defaults(func=_cmd_ablate)

    rp = sub.add_parser("report", help="write RUN/report.md and its plots from the run's stage manifests")
    rp.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out folder of `gristmill run` / `gristmill demo`")
    rp.set_defaults(func=_cmd_report)
    return ap


def _add_run_args(p: argparse.ArgumentParser, *, out_required: bool) -> None:
    p.add_argument("--out", type=Path, required=out_required, default=None if out_required else Path("runs/demo"),
                   help="the run folder; each stage writes RUN/<stage>/")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE")
    p.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage (earlier ones must be finished)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is skipped, why) and stop")
    _add_verify_inputs(p)


def _cmd_stage(args: argparse.Namespace) -> int:
    spec: StageSpec = args.spec
    recipe = cfg.load_toml(args.config) if args.config else {}
    extra_data: list[Path] = []
    if getattr(args, "tasks", None):
        from gristmill.eval.tasks import split_task_files

        names, extra_data = split_task_files(args.tasks.split(","))
        args.set = [f"eval.tasks={json.dumps(names)}", *args.set]
    recipe = cfg.apply_overrides(recipe, args.set)
    other = sorted(k for k in recipe if k != spec.name and any(s.startswith(f"{k}.") for s in args.set))
    if other:
        raise cfg.ConfigError(f"--set {other[0]}.…: this command configures [{spec.name}] only")
    config = cfg.build(spec.config_cls(), recipe.get(spec.name, {}), section=spec.name)
    inputs: dict[str, list[Path]] = {}
    for role in spec.roles:
        value = getattr(args, f"role_{role.name}")
        if value is None:
            continue
        paths = [Path(v) for v in (value if isinstance(value, list) else [value])]
        inputs[role.name] = [q for p in paths for q in runs.expand_glob(p)]
    if extra_data:  # task files named in --tasks are inputs like --data: hashed, recorded, part of the id
        inputs["data"] = inputs.get("data", []) + [p for p in extra_data if p not in inputs.get("data", [])]
    with folder_lock(args.out, command=f"gristmill {spec.name} --out {args.out}"):  # rank 0 only under torchrun
        m = spec.run_fn()(config, inputs, args.out, force=args.force)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per rank
        print(f"{spec.name}: {args.out} (id {m.id})")
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    if args.manifest_cmd == "verify":
        problems = verify(args.dir)
        for p in problems:
            print(p, file=sys.stderr)
        m = read_manifest(args.dir, check_digest=False)
        if problems:
            print(f"FAILED: {len(problems)} problem(s) with {args.dir}/manifest.json and its {len(m.outputs)} outputs",
                  file=sys.stderr)
            return EXIT_ERROR
        print(f"OK: {len(m.outputs)} outputs of {m.stage} {m.id} match")
        return 0
    if args.manifest_cmd == "lineage":
        print(format_lineage(lineage(args.dir)))
        return 0
    print(json.dumps(read_manifest(args.dir, check_digest=False).to_dict(), indent=2, ensure_ascii=False))
    return 0


def _check_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise runs.RunError(f"--out {out}: that is a file; a run writes one folder per stage under --out: "
                            "give a new or existing folder")


def _run_recipe(recipe_path: Path, args: argparse.Namespace, after: Callable[[], None] | None = None) -> int:
    """Plan and run the recipe; `after` runs once every stage finished (the demo's ablation), before the report."""
    _check_run_folder(args.out)
    # Held from the plan to the last stage, so the plan describes a folder no other run is changing.
    # A dry run only reads: it may look at a folder a run is writing.
    lock = (contextlib.nullcontext() if args.dry_run
            else folder_lock(args.out, command=f"gristmill run {recipe_path} --out {args.out}"))
    with lock:
        recipe = runs.load_recipe(recipe_path)
        steps = runs.plan(recipe, registry(), run_dir=args.out, recipe_dir=recipe_path.resolve().parent,
                          overrides=args.set, start=args.start, until=args.until)
        print(f"plan for {recipe_path} -> {args.out}:")
        print(runs.format_plan(steps))
        if args.dry_run:
            return 0
        runs.check_devices(steps)
        try:
            runs.execute(steps)
            if after is not None:
                after()
        finally:  # a stage that failed is named in the report too
            _write_report(args.out)
    return 0


def _write_report(run_dir: Path) -> None:
    """RUN/report.md after a run; a report that cannot be written is a warning, never the run's failure."""
    from gristmill.runreport import write_run_report

    try:
        print(f"run report: {write_run_report(run_dir)}")
    except (GristmillError, OSError) as e:
        print(f"gristmill: warning: run report not written: {e}", file=sys.stderr)


def _cmd_report(args: argparse.Namespace) -> int:
    from gristmill.runreport import write_run_report

    print(f"run report: {write_run_report(args.run_dir)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return _run_recipe(args.recipe, args)


def _write_demo_data(out: Path, pages: int | None, seed: int) -> dict:
    from gristmill.demo import write_demo_data

    kwargs = {"seed": seed} | ({"pages": pages} if pages is not None else {})
    return write_demo_data(out, **kwargs)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    summary = _write_demo_data(args.out, args.pages, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from gristmill.ablate import AblateConfig, run_ablation

    _check_run_folder(args.out)
    run_ablation(args.recipe, args.out, overrides=args.set, reference=args.reference,
                 config=AblateConfig(heldout_percent=args.heldout_percent), force=args.force)
    return 0


def _demo_ablation(args: argparse.Namespace) -> None:
    """The curation ablation on the demo's own chain: only the raw-text arm trains (RUN/*-raw), both models
    are scored on data/reference/heldout.txt, which no stage reads; the run report that follows shows it."""
    from gristmill.ablate import run_ablation

    print("[ablation] raw extracted text vs the curated chain, same model and token budget")
    res = run_ablation(DEMO_RECIPE, args.out, overrides=args.set, reference=args.out / "data" / "reference" / "heldout.txt")
    print(f"[ablation] {res['verdict']}")


def _add_benchmarks(args: argparse.Namespace, data: Path) -> None:
    """The demo's eval steps read data/eval; with the field's benchmark folder at hand they read it too (its
    files are hashed into each eval's id like any input), else CORE is reported as not given."""
    bench = args.benchmarks
    if bench is None or not Path(bench).is_dir():
        print(f"benchmark data not found ({bench}): the eval steps score the demo's own tasks only; "
              "give the field's data with --benchmarks DIR")
        return
    recipe = runs.load_recipe(DEMO_RECIPE)
    for step, role in recipe.get("inputs", {}).items():
        if recipe["run"].get("uses", {}).get(step) == "eval":
            have = role.get("data", [])
            have = [have] if isinstance(have, str) else list(have)
            paths = [p.replace("{run}", str(args.out.absolute())) for p in have] + [str(Path(bench).absolute())]
            args.set = [*args.set, f"inputs.{step}.data={json.dumps(paths)}"]


def _cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_RECIPE.is_file():
        raise runs.RunError(f"{DEMO_RECIPE}: the demo recipe is missing; `gristmill demo` runs from a checkout")
    _check_run_folder(args.out)
    with folder_lock(args.out, command=f"gristmill demo --out {args.out}"):  # the data too: _run_recipe re-enters it
        data = args.out / "data"
        # rewritten (the same bytes for the same pages and seed) when a file this version writes is missing,
        # e.g. reference/heldout.txt in a run folder made by an older gristmill
        if args.pages is not None or not all((data / f).is_file() for f in ("summary.json", "reference/heldout.txt")):
            print(f"writing the built-in demo data to {data}")
            _write_demo_data(data, args.pages, args.seed)
        else:
            print(f"demo data already in {data}")
        _add_benchmarks(args, data)
        whole = args.until is None and args.start is None  # the ablation needs the whole chain
        return _run_recipe(DEMO_RECIPE, args, after=(lambda: _demo_ablation(args)) if whole else None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Stage tools (`gristmill tokenize export ...`) take their own arguments.
    for spec in BUILTIN:
        prefix = ["align", spec.name] if spec.group == "align" else [spec.name]
        n = len(prefix)
        for name, target in spec.tools:
            if argv[:n] == prefix and argv[n:n + 1] == [name]:
                module, _, attr = target.partition(":")
                return _guard(lambda: getattr(importlib.import_module(module), attr)(argv[n + 1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "verify_inputs", False):
        from gristmill.manifests.hashing import VERIFY_ENV
        os.environ[VERIFY_ENV] = "1"  # the environment, so that torchrun's ranks and the planner's stages see it
    return _guard(lambda: args.func(args))


def _guard(fn) -> int:
    """Known failures print one clear line and exit non-zero; anything else keeps its traceback."""
    try:
        return int(fn() or 0)
    except (GristmillError, FileNotFoundError) as e:
        print(f"gristmill: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gristmill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
