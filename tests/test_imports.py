"""Imports follow the pipeline order of DESIGN.md, read from the source with ast (lazy imports too)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gristmill"
ORDER = ["curate", "tokenize", "pretrain", "align", "eval"]  # a stage may import earlier ones only
INFRA = {"manifests", "config", "errors", "stages", "runs", "__init__"}
TRAIN = "train"  # the training core: every training stage may import it; it imports no stage
KNOWN = set(ORDER) | INFRA | {"cli", "__main__", "demo", TRAIN}
NO_DEMO = {"align", "eval"}  # production checks and rewards read how to check an answer from the record, not the demo


def part_of(module: str) -> str | None:
    """'gristmill.curate.dedup' -> 'curate'; 'gristmill.config' -> 'config'; other packages -> None."""
    bits = module.split(".")
    if bits[0] != "gristmill":
        return None
    return bits[1] if len(bits) > 1 else "__init__"


def imports_of(path: Path, root: Path, *, names: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, lazy ones too. `from m import x` gives "m" (and "m.x"
    too when m is the top package); with names=True it gives "m.x" alone, for the caller to tell a submodule
    x from a name in m."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from (same for __init__)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this file's package
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not names:
                out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if names or part_of(mod) == "__init__"]
    return out


def violations(root: Path) -> list[str]:
    bad = []
    for f in sorted(root.rglob("*.py")):
        me = part_of(".".join(f.relative_to(root.parent).with_suffix("").parts))
        for line, mod in imports_of(f, root):
            other = part_of(mod)
            if other not in KNOWN or other == me or other == "__init__":
                continue
            where = f"{f.relative_to(root.parent)}:{line} imports {mod}"
            if me == "cli" or me == "__main__":
                continue  # the top sits above everything
            if other in ("cli", "__main__"):
                bad.append(f"{where}: nothing imports the CLI")
            elif me in INFRA and other not in INFRA:
                bad.append(f"{where}: {me} must know no stage")
            elif me in ORDER and other == "runs":
                bad.append(f"{where}: stages exchange data through manifests, not the run planner")
            elif me in ORDER and other in ORDER and ORDER.index(other) > ORDER.index(me):
                bad.append(f"{where}: {me} comes before {other} in the pipeline")
            elif me in NO_DEMO and other == "demo":
                bad.append(f"{where}: {me} never imports the demo (a record says how its answer is checked)")
            elif me == "demo" and other not in INFRA:
                bad.append(f"{where}: the demo data generator knows no stage")
            elif me == TRAIN and other not in INFRA:
                bad.append(f"{where}: the training core knows no stage (a stage passes it its loss and batches)")
    return bad


def module_of(f: Path, root: Path) -> str:
    parts = list(f.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, *, names: bool = False) -> dict[str, set[str]]:
    """gristmill module -> the gristmill modules it imports (at the top or lazily), by the longest known prefix;
    names=True resolves `from gristmill.align import sft` to the submodule gristmill.align.sft, and
    `from gristmill.align import AlignError` to the package gristmill.align."""
    files = {module_of(f, root): f for f in sorted(root.rglob("*.py"))}
    graph = {}
    for name, f in files.items():
        deps = set()
        for _, mod in imports_of(f, root, names=names):
            bits = mod.split(".")
            for k in range(len(bits), 0, -1):
                if ".".join(bits[:k]) in files:
                    deps.add(".".join(bits[:k]))
                    break
        graph[name] = deps - {name}
    return graph


def indirect_violations(root: Path) -> list[str]:
    """A stage module that reaches the planner or the CLI through any chain of imports (e.g. via stages.py), or
    an align / eval module that reaches the demo."""
    graph = import_graph(root)
    bad = []
    for start in sorted(graph):
        if part_of(start) not in ORDER:
            continue
        seen, queue = {start: [start]}, [start]
        while queue:
            mod = queue.pop(0)
            for dep in sorted(graph[mod]):
                if dep not in seen:
                    seen[dep] = seen[mod] + [dep]
                    queue.append(dep)
        for target in ("gristmill.runs", "gristmill.cli"):
            if target in seen:
                bad.append(f"{start} reaches {target}: {' -> '.join(seen[target])}")
        if part_of(start) in NO_DEMO:
            demo = sorted(m for m in seen if part_of(m) == "demo")
            if demo:
                bad.append(f"{start} reaches {demo[0]}: {' -> '.join(seen[demo[0]])}")
    return bad


def mutual_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every pair of modules that import each other, each import at the top or lazily."""
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of two or more modules that reach each other through chains of imports (the graph's strongly
    connected components), each sorted."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    reaches = {m: reach(m) for m in graph}
    groups = {frozenset({a} | {b for b in reaches[a] if a in reaches[b]}) for a in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


# Import cycles that stay for now; each a group of modules that reach each other, as cycles() reports it.
KNOWN_CYCLES = [
    # issue 25 removes these
    ["gristmill.curate.finalize", "gristmill.curate.pipeline", "gristmill.curate.report"],
    ["gristmill.curate.quality", "gristmill.curate.score"],
]


def test_no_two_modules_import_each_other():
    graph = import_graph(PKG, names=True)
    allowed = [set(g) for g in KNOWN_CYCLES]
    pairs = [f"{a} <-> {b}" for a, b in mutual_imports(graph) if not any({a, b} <= g for g in allowed)]
    assert pairs == [], "modules that import each other:\n  " + "\n  ".join(pairs)
    found = cycles(graph)
    longer = [" -> ".join(g) for g in found if g not in KNOWN_CYCLES]
    assert longer == [], "modules that reach each other through other modules:\n  " + "\n  ".join(longer)
    gone = [g for g in KNOWN_CYCLES if g not in found]
    assert gone == [], f"these cycles are gone (or changed): update KNOWN_CYCLES: {gone}"


def test_cycle_check_resolves_submodules_lazy_imports_and_longer_cycles(tmp_path):
    fake_pkg = tmp_path / "gristmill"
    (fake_pkg / "align").mkdir(parents=True)
    (fake_pkg / "curate").mkdir()
    (fake_pkg / "align" / "__init__.py").write_text("X = 1\n")
    (fake_pkg / "align" / "sft.py").write_text("from gristmill.align.stage import sample_rows\n")
    (fake_pkg / "align" / "stage.py").write_text("def sample_rows():\n    from gristmill.align import sft\n")
    (fake_pkg / "align" / "losses.py").write_text("from gristmill.align import X\nfrom . import sft\n")
    (fake_pkg / "curate" / "a.py").write_text("import gristmill.curate.b\n")
    (fake_pkg / "curate" / "b.py").write_text("from gristmill.curate.c import f\n")
    (fake_pkg / "curate" / "c.py").write_text("def f():\n    from gristmill.curate import a\n")
    graph = import_graph(fake_pkg, names=True)
    assert graph["gristmill.align.losses"] == {"gristmill.align", "gristmill.align.sft"}  # a name, a submodule
    assert mutual_imports(graph) == [("gristmill.align.sft", "gristmill.align.stage")]
    assert cycles(graph) == [["gristmill.align.sft", "gristmill.align.stage"],
                             ["gristmill.curate.a", "gristmill.curate.b", "gristmill.curate.c"]]


def test_package_imports_follow_pipeline_order():
    assert len(list(PKG.rglob("*.py"))) > 10
    assert violations(PKG) == []
    assert indirect_violations(PKG) == []


def test_checker_catches_a_backwards_import(tmp_path):
    # The rule must be able to fail: a curate module importing pretrain is reported.
    fake_pkg = tmp_path / "gristmill"
    (fake_pkg / "curate").mkdir(parents=True)
    (fake_pkg / "manifests").mkdir()
    (fake_pkg / "curate" / "x.py").write_text("def f():\n    from gristmill.pretrain import loop\n")
    (fake_pkg / "manifests" / "y.py").write_text("from ..curate import x\nimport gristmill.cli\n")
    (fake_pkg / "align").mkdir()
    (fake_pkg / "eval").mkdir()
    (fake_pkg / "align" / "z.py").write_text("def f():\n    from gristmill.demo.tasks import check_answer\n")
    (fake_pkg / "eval" / "w.py").write_text("from gristmill import demo\n")
    (fake_pkg / "train").mkdir()
    (fake_pkg / "train" / "v.py").write_text("def f():\n    from gristmill.align.sft import sft_loss\n")
    found = violations(fake_pkg)
    assert any("train/v.py:2 imports gristmill.align.sft" in v and "training core knows no stage" in v for v in found)
    assert any("curate/x.py:2 imports gristmill.pretrain" in v for v in found)
    assert any("manifests/y.py:1 imports gristmill.curate" in v and "know no stage" in v for v in found)
    assert any("nothing imports the CLI" in v for v in found)
    assert any("align/z.py:2 imports gristmill.demo.tasks" in v and "never imports the demo" in v for v in found)
    assert any("eval/w.py:1 imports gristmill.demo" in v and "never imports the demo" in v for v in found)


def test_checker_catches_a_stage_reaching_the_planner_through_another_module(tmp_path):
    fake_pkg = tmp_path / "gristmill"
    (fake_pkg / "pretrain").mkdir(parents=True)
    (fake_pkg / "pretrain" / "run.py").write_text("def f():\n    from gristmill.stages import spec\n")
    (fake_pkg / "stages.py").write_text("from gristmill.runs import Role\n")
    (fake_pkg / "runs.py").write_text("X = 1\n")
    assert violations(fake_pkg) == []  # each import on its own is allowed ...
    found = indirect_violations(fake_pkg)  # ... the chain is not
    assert found == ["gristmill.pretrain.run reaches gristmill.runs: "
                     "gristmill.pretrain.run -> gristmill.stages -> gristmill.runs"]


def test_checker_catches_align_reaching_the_demo_through_another_stage(tmp_path):
    fake_pkg = tmp_path / "gristmill"
    for d in ("align", "curate", "demo"):
        (fake_pkg / d).mkdir(parents=True)
    (fake_pkg / "align" / "answers.py").write_text("from gristmill.curate.helper import f\n")
    (fake_pkg / "curate" / "helper.py").write_text("def f():\n    from gristmill.demo.tasks import check_answer\n")
    (fake_pkg / "demo" / "tasks.py").write_text("def check_answer():\n    pass\n")
    assert violations(fake_pkg) == []  # curate may use the demo; align imports curate ...
    assert indirect_violations(fake_pkg) == [  # ... but through it align reaches the demo
        "gristmill.align.answers reaches gristmill.demo.tasks: "
        "gristmill.align.answers -> gristmill.curate.helper -> gristmill.demo.tasks"]
