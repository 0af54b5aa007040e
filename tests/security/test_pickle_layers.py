"""The static pickle reader is layered: stand-ins and state below the opcode modules, those
below the VM, the VM below the containers; no module imports a layer above it, none imports at
the bottom of the file, and none writes into another module's opcode table."""

from __future__ import annotations

import ast
from pathlib import Path

import doctor.io.pickle as package

ROOT = Path(package.__file__).parent
LAYER = {"values": 0, "allow": 0, "ops": 1, "calls": 1, "vm": 2, "tensors": 1, "streams": 3, "dcp": 3, "tar": 4,
         "containers": 5}


def _project_imports(tree: ast.Module) -> list[tuple[str, ast.stmt]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("doctor.io.pickle"):
            if node.module == "doctor.io.pickle":
                out += [(alias.name, node) for alias in node.names]
            else:
                out.append((node.module.rsplit(".", 1)[1], node))
    return out


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in ROOT.glob("*.py")} - {"__init__"} == set(LAYER)


def test_imports_only_go_down() -> None:
    for path in ROOT.glob("*.py"):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        for name, _ in _project_imports(tree):
            assert LAYER[name] < LAYER[path.stem], f"{path.stem} imports {name}, which is not below it"


def test_no_import_after_code_and_no_foreign_table_writes() -> None:
    for path in ROOT.glob("*.py"):
        tree = ast.parse(path.read_text())
        seen_code = False
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert not seen_code, f"{path.stem}: import after code at line {node.lineno}"
            elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                seen_code = True
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                target = node.value
                foreign = isinstance(target, ast.Attribute) and target.attr in ("OPS", "TABLE", "ops") and not (
                    isinstance(target.value, ast.Name) and target.value.id == "self")
                assert not foreign, \
                    f"{path.stem}:{node.lineno} writes into another module's table"
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    assert not (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == "OPS"), \
                        f"{path.stem}:{node.lineno} writes into OPS"


def test_the_vm_knows_every_opcode_once() -> None:
    import pickletools

    from doctor.io.pickle import calls, ops
    from doctor.io.pickle.vm import OPS

    assert not ops.TABLE.ops.keys() & calls.TABLE.ops.keys()
    assert set(OPS) == {op.code.encode("latin-1")[0] for op in pickletools.opcodes}
