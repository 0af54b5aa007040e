"""Rule selection in ruff's style: codes, prefixes (``DAT``, ``DAT1``) or ``ALL``.

Selection decides which findings are shown, never what a check sees: the runner still runs, hidden,
every prerequisite (``requires``) of a selected check (``doctor.runner.plan``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.errors import UsageError


@dataclass
class Selection:
    select: list[str] = field(default_factory=lambda: ["ALL"])
    ignore: list[str] = field(default_factory=list)

    @classmethod
    def from_lists(cls, select: list[str] | None = None, ignore: list[str] | None = None,
                   extend_select: list[str] | None = None) -> Selection:
        sel = [s.strip().upper() for s in (select or ["ALL"]) if s.strip()]
        sel += [s.strip().upper() for s in (extend_select or []) if s.strip()]
        ign = [s.strip().upper() for s in (ignore or []) if s.strip()]
        for s in sel + ign:
            validate_selector(s)
        return cls(sel, ign)

    def matches(self, code: str) -> bool:
        if code == "DOC001":
            return True  # a crashed check is never filtered out (exit code 2 either way)
        if code.startswith("DOC"):
            # The engine's own findings (DOC002: nothing recognized) are hidden only when ignored by
            # name: a --select that omits them must not turn an empty folder into a silent pass.
            return not any(s != "ALL" and code.startswith(s) for s in self.ignore)
        best_sel = max((_specificity(s) for s in self.select if _hits(s, code)), default=-1)
        best_ign = max((_specificity(s) for s in self.ignore if _hits(s, code)), default=-1)
        # ruff: the more specific selector wins; a tie goes to ignore
        return best_sel >= 0 and best_sel > best_ign


def _hits(selector: str, code: str) -> bool:
    return selector == "ALL" or code.startswith(selector)


def _specificity(selector: str) -> int:
    return 0 if selector == "ALL" else len(selector)


def validate_selector(selector: str) -> None:
    import re

    if selector == "ALL" or re.fullmatch(r"[A-Z]{1,3}\d{0,3}", selector):
        return
    raise UsageError(f"invalid rule selector {selector!r}: use a code (DAT101), a prefix (DAT, DAT1) or ALL")
