"""Imports follow the pipeline order of DESIGN.md, read from the source with ast (lazy imports too)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gristmill"
ORDER = ["curate", "tokenize", "pretrain", "align", "eval"]  # a stage may import earlier ones only
INFRA = {"manifests", "config", "errors", "stages", "runs", "__init__"}
KNOWN = set(ORDER) | INFRA | {"cli", "__main__", "demo"}


def part_of(module: str) -> str | None:
    """'gristmill.curate.dedup' -> 'curate'; 'gristmill.config' -> 'config'; other packages -> None."""
    bits = module.split(".")
    if bits[0] != "gristmill":
        return None
    return bits[1] if len(bits) > 1 else "__init__"


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
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
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if part_of(mod) == "__init__"]
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
            elif me == "demo" and other not in INFRA:
                bad.append(f"{where}: the demo data generator knows no stage")
    return bad


def module_of(f: Path, root: Path) -> str:
    parts = list(f.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """gristmill module -> the gristmill modules it imports (at the top or lazily), by the longest known prefix."""
    files = {module_of(f, root): f for f in sorted(root.rglob("*.py"))}
    graph = {}
    for name, f in files.items():
        deps = set()
        for _, mod in imports_of(f, root):
            bits = mod.split(".")
            for k in range(len(bits), 0, -1):
                if ".".join(bits[:k]) in files:
                    deps.add(".".join(bits[:k]))
                    break
        graph[name] = deps - {name}
    return graph


def indirect_violations(root: Path) -> list[str]:
    """A stage module that reaches the planner or the CLI through any chain of imports (e.g. via stages.py)."""
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
    return bad


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
    found = violations(fake_pkg)
    assert any("curate/x.py:2 imports gristmill.pretrain" in v for v in found)
    assert any("manifests/y.py:1 imports gristmill.curate" in v and "know no stage" in v for v in found)
    assert any("nothing imports the CLI" in v for v in found)


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
