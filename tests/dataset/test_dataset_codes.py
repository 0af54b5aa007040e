"""Typed rule identity for the dataset family (issue 16): every code a DAT check can emit is a
registered check's code, written once (``doctor.checks.dataset.codes.DAT``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import doctor.checks.dataset  # noqa: F401 - registers the checks
from doctor.checks.dataset.codes import DAT, all_codes
from doctor.checks.dataset.scan import scan_dataset

from doctor.registry import REGISTRY
from doctor.testing import LLAVA_PROBLEMS, MESSAGES_PROBLEMS, make_llava_dataset, make_messages_dataset

FAMILY = Path(doctor.checks.dataset.__file__).resolve().parent
FIXER = FAMILY.parent.parent / "fixers" / "dataset.py"
CODE = re.compile(r"DAT\d{3}")


def registered() -> dict[str, type]:
    return {code: cls for code, cls in REGISTRY.items() if code.startswith("DAT")}


def modules() -> list[Path]:
    return sorted(FAMILY.rglob("*.py")) + [FIXER]


def test_the_code_registry_is_exactly_the_registered_checks():
    codes = all_codes()
    assert sorted(codes.values()) == sorted(registered())
    for name, code in codes.items():
        assert registered()[code].name.upper().replace("-", "_") == name, (name, code)


def test_every_code_referenced_in_the_family_is_registered_and_spelled_once():
    names = set(all_codes())
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "DAT":
                assert node.attr in names, f"{path.name}:{node.lineno}: DAT.{node.attr} is no registered check"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for code in CODE.findall(node.value):
                    assert code in registered(), f"{path.name}:{node.lineno}: {code} is no registered check"
                    assert path.name == "codes.py", (
                        f"{path.name}:{node.lineno}: write DAT.<NAME>, not {code!r}")


def test_every_check_class_takes_its_code_from_the_registry():
    for path in sorted((FAMILY / "rules").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                if isinstance(stmt, ast.Assign) and [t.id for t in stmt.targets if isinstance(t, ast.Name)] == ["code"]:
                    assert isinstance(stmt.value, ast.Attribute) and stmt.value.value.id == "DAT", (path.name, cls.name)


def test_codes_collected_on_a_broken_corpus_are_registered(tmp_path):
    seen: set[str] = set()
    for path in (make_llava_dataset(tmp_path, n=5, problems=LLAVA_PROBLEMS),
                 make_messages_dataset(tmp_path / "m", n=5, problems=MESSAGES_PROBLEMS)):
        for fast in (True, False):
            seen |= set(scan_dataset(str(path), fast=fast).problems.counts)
    assert len(seen) >= 8 and seen <= set(registered())
    assert DAT.UNKNOWN_ROLE in seen and DAT.TRAILING_COMMA in seen
