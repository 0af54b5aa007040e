"""Configuration from ``[tool.vlm-doctor]`` in pyproject.toml or from ``vlm-doctor.toml``,
found upward from the current folder (ruff's rule: the closest file wins). Command-line flags
override it. An unknown key is an error that says "did you mean"."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# key -> (type, help). Keys use the command-line spelling (kebab-case).
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "select": (list, "rule codes or prefixes to enable (default: ALL)"),
    "extend-select": (list, "codes or prefixes added to select"),
    "ignore": (list, "rule codes or prefixes to disable"),
    "output-format": (str, "full, concise, json, json-lines, github, sarif or junit"),
    "fail-on": (str, "lowest severity that makes the exit code 1: error, warning or info"),
    "base": (str, "base model folder for adapter checks"),
    "image-folder": (str, "root that relative image paths resolve against"),
    "tokenizer": (str, "tokenizer folder for token-budget checks"),
    "model": (str, "model folder whose vision config sets the image token count"),
    "max-length": (int, "token budget per record for the token-budget checks"),
    "images": (str, "image check level: none, exists, header or decode"),
    "decode-sample": ((int, float), "percent of images to decode with images = decode"),
    "deep": (bool, "read every tensor value (NaN, Inf, all-zero)"),
    "jobs": (int, "worker threads for image checks (0 = one per core)"),
    "engine": (str, "where the dataset pass runs: local or ray"),
    "ray-address": (str, "the Ray cluster --engine ray joins (default: start one on this machine)"),
    "show-fixes": (bool, "list what --fix would do for each fixable finding"),
}


@dataclass
class Config:
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def find_config(start: str | Path | None = None) -> Path | None:
    """The closest vlm-doctor.toml, or pyproject.toml with a [tool.vlm-doctor] table."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / "vlm-doctor.toml"
        if own.is_file():
            return own
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _has_tool_table(pyproject):
            return pyproject
    return None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file (``path``), or the one found upward; empty if none."""
    cfg_path = Path(path) if path else find_config()
    if cfg_path is None:
        return Config()
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{cfg_path}: invalid TOML: {e}") from None
    table = data.get("tool", {}).get("vlm-doctor", {}) if cfg_path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{cfg_path}: [tool.vlm-doctor] must be a table")
    return Config(str(cfg_path), validate(table, str(cfg_path)))


def validate(table: dict[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm not in KEYS:
            close = difflib.get_close_matches(norm, KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(KEYS))}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        expected, _ = KEYS[norm]
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{where}: {key} must be {_type_name(expected)}, not a boolean")
        if not isinstance(value, expected):
            raise ConfigError(f"{where}: {key} must be {_type_name(expected)}, got {value!r}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings")
        values[norm] = value
    return values


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {list: "a list of strings", str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    if isinstance(t, tuple):
        return "a number"
    return names.get(t, t.__name__)


def _has_tool_table(pyproject: Path) -> bool:
    try:
        return "vlm-doctor" in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
