"""The house holds: every family imports and registers what the README documents, no module in
checks/ or fixers/ is a leading-underscore namespace, no import cycle among project modules, every
`requires`, fixer name and artifact kind a check names exists, and registration refuses what would
silently go wrong (a duplicate fixture name, a family module that is missing)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from doctor import registry
from doctor.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]
# Source folder -> the import name it installs as (pyproject / setup.py package-dir).
PACKAGES = {"doctor": "doctor", "checks": "doctor.checks", "fixers": "doctor.fixers"}


def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "doctor" and parts and parts[0] in ("checks", "fixers"):
                continue  # a checkout's symlinks to the top-level folders
            mods[".".join([name, *parts])] = path
    return mods


def test_every_family_imports_and_registers_the_documented_codes():
    readme = (ROOT / "README.md").read_text()
    documented = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([A-Z]{3})` \((\d+)\) \|", readme, re.M)}
    assert set(documented) == set(registry.FAMILIES), "README's family table names every family once"
    for prefix, family in registry.FAMILIES.items():
        importlib.import_module(family.module)  # `python -c "import doctor.checks.dataset"` works
        codes = [c for c in registry.REGISTRY if c.startswith(prefix)]
        assert len(codes) == documented[prefix], (prefix, len(codes), documented[prefix])
    total = re.search(r"^(\d+) checks in (\d+) families", readme, re.M)
    assert total and int(total.group(1)) == len(registry.REGISTRY) and int(total.group(2)) == len(registry.FAMILIES)


def test_no_leading_underscore_modules_in_checks_or_fixers():
    bad = [str(p.relative_to(ROOT)) for folder in ("checks", "fixers") for p in (ROOT / folder).rglob("_*.py")
           if p.name != "__init__.py"]
    assert bad == []


def _module_level_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules imported when ``module`` is imported (module scope, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base)
            elif isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
                        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
                    visit(node.orelse)
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With,)):
                visit(node.body)

    visit(tree.body)
    return found


def test_no_import_cycle_among_project_modules():
    mods = project_modules()
    known = set(mods)
    graph = {m: _module_level_imports(p, m, known) for m, p in mods.items()}
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == [], cycles


def test_every_requires_fixer_and_artifact_kind_exists():
    registry.load_all()
    fixers = {p.stem if p.name != "__init__.py" else p.parent.name
              for p in (ROOT / "fixers").rglob("*.py")
              if p.parent == ROOT / "fixers" or p.name == "__init__.py" and p.parent.parent == ROOT / "fixers"}
    for code, cls in registry.REGISTRY.items():
        for req in cls.requires:
            assert req in registry.REGISTRY, (code, req)
        assert set(cls.artifacts) <= KINDS, (code, cls.artifacts)
    for family in registry.FAMILIES.values():
        assert set(family.artifacts) <= KINDS | {"*"}, family
    # every Fix(..., fixer="name") written in a check module names a fixer module
    named: set[tuple[str, str]] = set()
    for path in (ROOT / "checks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Fix":
                for kw in node.keywords:
                    if kw.arg == "fixer" and isinstance(kw.value, ast.Constant):
                        named.add((str(path.relative_to(ROOT)), kw.value.value))
                if len(node.args) >= 3 and isinstance(node.args[2], ast.Constant):
                    named.add((str(path.relative_to(ROOT)), node.args[2].value))
    assert named, "the scan found the Fix calls"
    unknown = sorted((where, name) for where, name in named if name not in fixers)
    assert unknown == [], unknown
    for name in {n for _w, n in named}:
        assert hasattr(importlib.import_module(f"doctor.fixers.{name}"), "apply"), name


def test_a_duplicate_fixture_name_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "FIXTURES", dict(registry.FIXTURES))

    def tensor_index(path):
        return path

    registry.fixture(tensor_index)
    registry.fixture(tensor_index)  # the same function again (a module imported twice) is fine
    other = type(tensor_index)(tensor_index.__code__, {}, "tensor_index")
    other.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="registered twice"):
        registry.fixture(other)


def test_a_family_whose_module_is_missing_fails_loudly(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, "ZZZ", registry.Family("ZZZ", "doctor.checks.no_such_family", "x",
                                                                 frozenset({"model"})))
    monkeypatch.setattr(registry, "_loaded", set(registry._loaded))
    with pytest.raises(ModuleNotFoundError):
        registry.load_family("ZZZ")


def test_a_check_naming_an_unknown_artifact_kind_is_refused():
    class Bad(registry.Check):
        """x

        ## What it does
        x
        ## Why is this bad?
        x
        ## Example
        x
        ## How to fix
        x
        """

        code = "ZZZ999"
        name = "bad"
        artifacts = frozenset({"modle"})

    with pytest.raises(ValueError, match="modle"):
        registry.register(Bad)
    assert "ZZZ999" not in registry.REGISTRY


def test_the_code_base_is_lint_clean():
    """One way to write: `ruff check` (pyproject's rules and import order) passes on the whole repo."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", str(root)],
                          capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
