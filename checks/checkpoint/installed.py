"""What the INSTALLED transformers knows, read from its source files without importing it.

Importing ``transformers.models.auto.configuration_auto`` pulls in torch (2-3 s); the config
checks must stay light, so the registered ``model_type`` names and the architecture classes are
read statically: ``CONFIG_MAPPING_NAMES`` is a literal in ``models/auto/auto_mappings.py`` (5.x) or
``models/auto/configuration_auto.py`` (4.x), plus ``.update({...})`` calls. When the layout is not
recognised the real module is imported as a fallback, so a future transformers stays correct.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

_MAPPING_NAMES = ("CONFIG_MAPPING_NAMES", "SPECIAL_MODEL_TYPE_TO_MODULE_NAME")


@dataclass
class InstalledTransformers:
    version: str
    root: Path
    model_types: dict[str, str]  # model_type -> config class name
    special_modules: dict[str, str] = field(default_factory=dict)
    static: bool = True  # False when the mapping came from importing transformers

    def module_dir(self, model_type: str) -> Path:
        name = self.special_modules.get(model_type, model_type).replace("-", "_")
        return self.root / "models" / name

    @functools.cached_property
    def auto_class_names(self) -> frozenset[str]:
        """Every class name the Auto* mappings mention (architectures among them)."""
        text = _read(self.root / "models" / "auto" / "modeling_auto.py")
        return frozenset(re.findall(r'"([A-Z][A-Za-z0-9_]+)"', text))

    def knows_architecture(self, arch: str, model_type: str | None) -> bool:
        if arch in self.auto_class_names:
            return True
        if model_type:
            folder = self.module_dir(model_type)
            for path in folder.glob("modeling_*.py"):
                if re.search(rf"^class {re.escape(arch)}\b", _read(path), re.M):
                    return True
        return False




@functools.lru_cache(maxsize=1)
def installed_transformers() -> InstalledTransformers | None:
    """The installed transformers, or None when it is not installed."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    auto = root / "models" / "auto"
    mappings: dict[str, dict[str, str]] = {n: {} for n in _MAPPING_NAMES}
    for name in ("auto_mappings.py", "configuration_auto.py"):
        _collect(_read(auto / name), mappings)
    if len(mappings["CONFIG_MAPPING_NAMES"]) < 50:  # layout not recognised: ask the library itself
        from transformers.models.auto import configuration_auto as ca

        return InstalledTransformers(
            version, root, dict(ca.CONFIG_MAPPING_NAMES),
            dict(getattr(ca, "SPECIAL_MODEL_TYPE_TO_MODULE_NAME", {})), static=False)
    return InstalledTransformers(version, root, mappings["CONFIG_MAPPING_NAMES"],
                                 mappings["SPECIAL_MODEL_TYPE_TO_MODULE_NAME"])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _collect(source: str, out: dict[str, dict[str, str]]) -> None:
    """Add the string pairs assigned to (or ``.update``-d into) the named mappings."""
    if not source:
        return
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        target: str | None = None
        value: ast.AST | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value = node.target.id, node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "update" and isinstance(node.func.value, ast.Name)):
            target, value = node.func.value.id, node
        if target in out and value is not None:
            out[target].update(_string_pairs(value))


def _string_pairs(node: ast.AST) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Tuple) and len(sub.elts) == 2 and all(_is_str(e) for e in sub.elts):
            pairs[sub.elts[0].value] = sub.elts[1].value  # type: ignore[attr-defined]
        elif isinstance(sub, ast.Dict):
            for k, v in zip(sub.keys, sub.values, strict=True):
                if k is not None and _is_str(k) and _is_str(v):
                    pairs[k.value] = v.value  # type: ignore[attr-defined]
    return pairs


def _is_str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)
