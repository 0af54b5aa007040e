"""Small JSON files (configs, indexes) read once, never raising: the parsed data, or why it could
not be parsed with the parser's 1-based line and column, ready for a finding's location."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_LIMIT = 64 << 20
MISSING = "file is missing"


@dataclass
class JsonFile:
    path: Path
    exists: bool
    data: Any = None
    error: str | None = None
    line: int | None = None
    column: int | None = None

    @property
    def ok(self) -> bool:
        return self.exists and self.error is None

    @property
    def file(self) -> str:
        return str(self.path)


def read_json(path: str | os.PathLike[str], limit: int = JSON_LIMIT) -> JsonFile:
    """Parse a JSON file. A missing file has ``exists=False`` and ``error == MISSING``."""
    path = Path(path)
    if not path.is_file():
        return JsonFile(path, exists=False, error=MISSING)
    try:
        size = path.stat().st_size
        if size > limit:
            return JsonFile(path, True, error=f"{size:,} bytes is too large for a {path.name}")
        raw = path.read_bytes()
    except OSError as e:
        return JsonFile(path, True, error=f"cannot read: {e.strerror or e}")
    if raw.startswith(b"version https://git-lfs"):
        return JsonFile(path, True, error="this is a Git-LFS pointer, not the file (the download skipped LFS)",
                        line=1, column=1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return JsonFile(path, True, error=f"not UTF-8 text ({e.reason} at byte {e.start})")
    try:
        return JsonFile(path, True, data=json.loads(text))
    except json.JSONDecodeError as e:
        return JsonFile(path, True, error=e.msg, line=e.lineno, column=e.colno)
    except RecursionError:
        return JsonFile(path, True, error="JSON nested too deeply to parse")
