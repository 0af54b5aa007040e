"""Dependencies earn their place: every core dependency in pyproject.toml is imported by the
product (doctor/, checks/, fixers/; not by tests, benchmarks or the test factory) and has a
one-line reason beside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).parents[2]
IMPORT_NAMES = {"pillow": "PIL"}


def _product_imports() -> set[str]:
    names: set[str] = set()
    for folder in ("doctor", "checks", "fixers"):
        for path in (ROOT / folder).rglob("*.py"):
            if "testing" in path.relative_to(ROOT).parts or path.is_symlink():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def test_every_core_dependency_is_imported_by_the_product_and_says_why():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    deps = tomllib.loads(text)["project"]["dependencies"]
    assert deps
    imported = _product_imports()
    for spec in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
        assert IMPORT_NAMES.get(name, name.replace("-", "_")) in imported, f"{name} is a core dependency nobody imports"
        line = next(line for line in text.splitlines() if f'"{spec}"' in line)
        assert re.search(r"#\s*\S", line), f"{spec}: give the reason on its line"
    assert not any(d.startswith(("ijson", "jsonschema")) for d in deps)
