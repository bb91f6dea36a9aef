"""The README's file tree lists every file of the project, and every module says its job in one line."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in out if f.endswith((".py", ".toml", ".sh")) and (ROOT / f).is_file()
                  and f.split("/")[0] in {"gristmill", "benchmarks", "recipes", "tests"})


def readme_tree() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Files\n+```\n(.*?)```", text, re.S)
    assert m, "README.md needs a '## Files' section with the file tree in a ``` block"
    return m.group(1)


def tree_paths(tree: str) -> set[str]:
    """Paths from an indented tree: a line 'name/' opens a folder for the lines indented below it."""
    stack: list[tuple[int, str]] = []
    paths = set()
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([s for _, s in stack] + [name.rstrip("/")])
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
        else:
            paths.add(path)
    return paths


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```\w*\n(.*?)```", text, re.S).group(1)
    assert [ln.strip() for ln in first_block.strip().splitlines()] == ["make demo", "make test"]


def test_readme_tree_matches_the_files():
    listed, actual = tree_paths(readme_tree()), set(project_files())
    assert sorted(actual - listed) == [], "files missing from the README tree"
    assert sorted(listed - actual - {"pyproject.toml", "Makefile", "README.md", ".ci/run"}) == [], \
        "README lists files that do not exist"


def test_every_module_says_its_job_in_one_line():
    missing = []
    for f in project_files():
        if f.endswith(".py") and f.startswith(("gristmill/", "benchmarks/")):
            doc = ast.get_docstring(ast.parse((ROOT / f).read_text()))
            if not doc or not doc.strip():
                missing.append(f)
    assert missing == []


def test_tree_parser_nests_folders():
    tree = "gristmill/\n  cli.py   x\n  curate/\n    run.py  y\n  config.py z\ntests/\n  test_a.py\n"
    assert tree_paths(tree) == {"gristmill/cli.py", "gristmill/curate/run.py", "gristmill/config.py",
                                "tests/test_a.py"}
