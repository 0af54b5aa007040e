"""The data every check produces: findings, their locations and fixes, and check results.

Nothing here imports anything heavy; reporters and the JSON contract are built on these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is. Ordered: error > warning > info."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            from doctor.errors import UsageError

            raise UsageError(f"unknown severity {value!r}: use error, warning or info") from None


class Applicability(str, enum.Enum):
    """Ruff's fix applicability: safe keeps meaning, unsafe may change behaviour (opt-in with
    --unsafe-fixes), display-only is shown but never applied."""

    SAFE = "safe"
    UNSAFE = "unsafe"
    DISPLAY_ONLY = "display-only"


@dataclass(frozen=True)
class Location:
    """Where inside an artifact a finding points. Exactly one of the fields is usually set.

    - ``pointer``: a JSON pointer (RFC 6901) into a JSON document, e.g. ``/12/conversations/0/from``
    - ``line`` / ``column``: 1-based position in a text file
    - ``tensor``: a tensor name inside a weights file
    - ``key``: a config key (dotted for nested keys, e.g. ``text_config.vocab_size``)
    - ``record``: 0-based record index in a dataset (JSONL line index or array index)
    """

    pointer: str | None = None
    line: int | None = None
    column: int | None = None
    tensor: str | None = None
    key: str | None = None
    record: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def render(self) -> str:
        """A compact human form: ``3:5``, ``#/0/image``, ``tensor:lm_head.weight``, ``key:r``."""
        if self.line is not None:
            return f"{self.line}:{self.column or 1}"
        if self.pointer is not None:
            return f"#{self.pointer}"
        if self.tensor is not None:
            return f"tensor:{self.tensor}"
        if self.key is not None:
            return f"key:{self.key}"
        if self.record is not None:
            return f"record:{self.record}"
        return ""

    @staticmethod
    def json_pointer(*parts: object) -> str:
        """Build an RFC 6901 pointer from path parts, escaping ``~`` and ``/``."""
        return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Fix:
    """A repair a fixer can perform. ``fixer`` names a module in ``doctor.fixers`` (for example
    ``dataset`` or ``merge``); ``params`` is what that fixer needs from this finding."""

    description: str
    applicability: Applicability = Applicability.SAFE
    fixer: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "applicability": self.applicability.value,
            "fixer": self.fixer,
        }


@dataclass(frozen=True)
class Finding:
    """One problem found by one check in one artifact."""

    code: str
    name: str
    severity: Severity
    message: str
    path: str
    location: Location | None = None
    hint: str | None = None
    why: str | None = None
    fix: Fix | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "message": self.message,
            "path": self.path,
            "location": self.location.to_dict() if self.location else None,
            "why": self.why,
            "hint": self.hint,
            "fix": self.fix.to_dict() if self.fix else None,
        }


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """How one check ended on one artifact."""

    code: str
    name: str
    path: str
    status: Status
    reason: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "path": self.path,
            "status": self.status.value,
            "reason": self.reason,
        }
